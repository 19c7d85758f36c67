// The list page of one kind: search box, table, links to edit, delete with confirmation.

import { api, values } from './api.js';
import { h, replace } from './dom.js';
import { remove, takeFlash } from './forms.js';

/**
 * Renders the list of `kind` into `main`. `spec`: `title`, `singular`, `columns`
 * (`[label, value => text or node]`, after the id), `text(value)` (what the search matches,
 * besides id and name).
 */
export async function listPage(main, spec) {
  const { kind, title, singular, columns } = spec;
  const data = values(await api('GET', kind));
  const search = h('input', {
    type: 'search',
    id: 'search',
    placeholder: `Filter by id, name${spec.searchHint ? ', ' + spec.searchHint : ''}`,
    autocomplete: 'off',
  });
  const tbody = h('tbody');
  const count = h('p', { class: 'count', id: 'list-count', 'aria-live': 'polite' });
  const rows = data.map((v) => {
    const id = String(v.id);
    const haystack = [id, v.name || '', v.desc || '', spec.text ? spec.text(v) : ''].join(' ').toLowerCase();
    const tr = h(
      'tr',
      { dataset: { id } },
      h('th', { scope: 'row' }, h('a', { href: `#/${kind}/${encodeURIComponent(id)}` }, id)),
      columns.map(([label, get]) => h('td', { dataset: { label } }, get(v) ?? '')),
      h(
        'td',
        { class: 'row-actions' },
        h('a', { href: `#/${kind}/${encodeURIComponent(id)}`, class: 'button small', 'aria-label': `Edit ${singular} ${id}` }, 'Edit'),
        h(
          'button',
          {
            type: 'button',
            class: 'danger small',
            'aria-label': `Delete ${singular} ${id}`,
            onclick: () => remove(kind, singular, id, () => listPage(main, spec)),
          },
          'Delete',
        ),
      ),
    );
    return { tr, haystack };
  });
  const filter = () => {
    const q = search.value.trim().toLowerCase();
    let shown = 0;
    replace(tbody);
    for (const r of rows) {
      if (!q || r.haystack.includes(q)) {
        tbody.append(r.tr);
        shown += 1;
      }
    }
    if (!shown) {
      const text = rows.length ? `No ${title.toLowerCase()} match “${search.value.trim()}”.` : `No ${title.toLowerCase()} yet.`;
      tbody.append(h('tr', {}, h('td', { colspan: columns.length + 2, class: 'empty' }, text)));
    }
    count.textContent = q ? `${shown} of ${rows.length} shown` : `${rows.length} in total`;
  };
  search.addEventListener('input', filter);
  filter();
  replace(
    main,
    h(
      'div',
      { class: 'page-head' },
      h('h1', { id: 'page-title' }, title),
      h('a', { href: `#/${kind}/new`, class: 'button primary', id: 'new' }, `New ${singular}`),
    ),
    h('p', { class: 'form-status', role: 'status' }, takeFlash()),
    h('p', { class: 'form-error', id: 'list-error', role: 'alert' }),
    h('div', { class: 'field search' }, h('label', { for: 'search' }, `Search ${title.toLowerCase()}`), search),
    count,
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { class: 'list', id: 'list' },
        h('caption', { class: 'visually-hidden' }, title),
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'ID'), columns.map(([label]) => h('th', { scope: 'col' }, label)), h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
        tbody,
      ),
    ),
  );
}
