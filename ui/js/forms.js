// Form building blocks: labelled fields keyed by their admin API path, errors from the API
// shown next to the field they name, the create/edit page and the delete confirmation.

import { api, objectPath, problems } from './api.js';
import { h, byId, fieldId, replace } from './dom.js';

/**
 * A labelled field for the API path `path`: `.field[data-path]` holding the label, the
 * control, an optional help line and the error line the API's messages go to. `alias`
 * names other API paths shown here (`uris` for `uri`).
 */
export function field(path, label, control, help, alias) {
  const id = fieldId(path);
  if (!control.id) control.id = id;
  const err = h('p', { class: 'field-error', id: control.id + '-error', 'aria-live': 'polite' });
  const helpEl = help ? h('p', { class: 'help', id: control.id + '-help' }, help) : null;
  control.setAttribute('aria-describedby', [helpEl && helpEl.id, err.id].filter(Boolean).join(' '));
  const check = control.type === 'checkbox';
  return h(
    'div',
    { class: check ? 'field field-check' : 'field', dataset: alias ? { path, alias } : { path } },
    check ? [control, h('label', { for: control.id }, label)] : [h('label', { for: control.id }, label), control],
    helpEl,
    err,
  );
}

/** A text input for `path`. */
export function text(path, value, attrs = {}) {
  return h('input', { type: 'text', id: fieldId(path), value: value ?? '', autocomplete: 'off', spellcheck: 'false', ...attrs });
}

/** A number input for `path`. */
export function number(path, value, attrs = {}) {
  return h('input', { type: 'number', id: fieldId(path), value: value ?? '', inputmode: 'numeric', ...attrs });
}

/** A checkbox for `path`. */
export function checkbox(path, checked, attrs = {}) {
  return h('input', { type: 'checkbox', id: fieldId(path), checked: Boolean(checked), ...attrs });
}

/** A select for `path`; `options` are `[value, label]` pairs. */
export function select(path, options, value, attrs = {}) {
  const el = h('select', { id: fieldId(path), ...attrs });
  for (const [v, label] of options) el.append(h('option', { value: v }, label));
  el.value = value ?? options[0]?.[0] ?? '';
  return el;
}

/** A textarea for `path`. */
export function textarea(path, value, attrs = {}) {
  return h('textarea', { id: fieldId(path), rows: 6, spellcheck: 'false', autocomplete: 'off', ...attrs }, value ?? '');
}

/** The trimmed value of the control for `path`, or null when empty. */
export function valueOf(path) {
  const v = byId(fieldId(path)).value.trim();
  return v === '' ? null : v;
}

/** A comma- or space-separated list from the control for `path`, or null when empty. */
export function listOf(path) {
  const v = valueOf(path);
  if (v === null) return null;
  const items = v.split(/[\s,]+/).filter(Boolean);
  return items.length ? items : null;
}

/** The integer in the control for `path`, or null when empty (the text when not a number). */
export function intOf(path) {
  const v = valueOf(path);
  if (v === null) return null;
  return /^-?\d+$/.test(v) ? Number(v) : v;
}

/** `obj` without null fields and empty objects (a new object needs no removals). */
export function pruned(obj) {
  if (Array.isArray(obj)) return obj.map(pruned);
  if (obj === null || typeof obj !== 'object') return obj;
  const out = {};
  for (const [k, v] of Object.entries(obj)) {
    const p = pruned(v);
    if (p === null || p === undefined) continue;
    if (typeof p === 'object' && !Array.isArray(p) && Object.keys(p).length === 0) continue;
    out[k] = p;
  }
  return out;
}

/** Clears the error lines of `form`. */
export function clearErrors(form) {
  for (const e of form.querySelectorAll('.field-error, .form-error')) e.textContent = '';
  for (const c of form.querySelectorAll('[aria-invalid]')) c.removeAttribute('aria-invalid');
}

/**
 * Shows an admin API error message in `form`: each problem next to the field its path
 * names (the longest `data-path` it starts with), the rest in the form's error box.
 */
export function showErrors(form, message) {
  clearErrors(form);
  const fields = [...form.querySelectorAll('[data-path]')];
  const general = [];
  let first = null;
  for (const p of problems(message)) {
    const target = bestField(fields, p.path);
    if (!target) {
      general.push(p.path ? `${p.path}: ${p.message}` : p.message);
      continue;
    }
    const err = target.querySelector(':scope > .field-error');
    err.textContent = err.textContent ? `${err.textContent} ${p.message}` : p.message;
    const control = target.querySelector(':scope > input, :scope > select, :scope > textarea');
    if (control) {
      control.setAttribute('aria-invalid', 'true');
      first = first || control;
    }
  }
  const box = form.querySelector('.form-error');
  box.textContent = general.join('\n');
  (first || box).focus?.();
}

function bestField(fields, path) {
  if (!path) return null;
  let best = null;
  let bestLen = -1;
  for (const f of fields) {
    for (const dp of [f.dataset.path, ...(f.dataset.alias || '').split(' ').filter(Boolean)]) {
      const hit = path === dp || path.startsWith(dp + '.') || path.startsWith(dp + '[');
      if (hit && dp.length > bestLen) {
        best = f;
        bestLen = dp.length;
      }
    }
  }
  return best;
}

/**
 * Shows `[{field, message}]` (the inspect endpoint's problems, or probe findings) next to
 * the fields of `form` they name, without clearing other messages.
 */
export function showFieldNotes(form, notes) {
  const fields = [...form.querySelectorAll('[data-path]')];
  for (const n of notes) {
    const target = bestField(fields, n.field);
    if (!target) continue;
    const err = target.querySelector(':scope > .field-error');
    if (!err.textContent.includes(n.message)) {
      err.textContent = err.textContent ? `${err.textContent} ${n.message}` : n.message;
    }
    const control = target.querySelector(':scope > input, :scope > select, :scope > textarea');
    if (control) control.setAttribute('aria-invalid', 'true');
  }
}

let flash = '';

/** A message shown once on the next page (after a save navigates). */
export function setFlash(message) {
  flash = message;
}

/** Takes the pending flash message. */
export function takeFlash() {
  const f = flash;
  flash = '';
  return f;
}

/** Asks before a destructive action; resolves true when confirmed. */
export function confirmDialog(message, action = 'Delete') {
  const dialog = byId('confirm');
  replace(byId('confirm-text'), message);
  byId('confirm-yes').textContent = action;
  return new Promise((resolve) => {
    const done = (ok) => () => {
      dialog.close();
      resolve(ok);
    };
    const yes = byId('confirm-yes');
    const no = byId('confirm-no');
    const onYes = done(true);
    const onNo = done(false);
    yes.addEventListener('click', onYes, { once: true });
    no.addEventListener('click', onNo, { once: true });
    dialog.addEventListener(
      'close',
      () => {
        yes.removeEventListener('click', onYes);
        no.removeEventListener('click', onNo);
        resolve(false);
      },
      { once: true },
    );
    dialog.showModal();
    no.focus();
  });
}

/**
 * The create/edit page of one object. `spec`: `kind` (API segment), `singular`, `id`
 * (null: new), `value` (the stored object, or {}), and `build(value)` returning
 * `{nodes, collect()}`: the fields, and the object to send (null = remove the field).
 * A new object is PUT (id given) or POSTed; an edit is a JSON merge PATCH, so fields the
 * form does not show are kept.
 */
export function editor(main, spec) {
  const { kind, singular, id, value } = spec;
  const isNew = id === null;
  const built = spec.build(value);
  const status = h('p', { id: 'form-status', class: 'form-status', role: 'status' }, takeFlash());
  const saveBtn = h('button', { type: 'submit', id: 'save', class: 'primary' }, isNew ? `Create ${singular}` : 'Save changes');
  const form = h(
    'form',
    { id: 'editor', novalidate: true, 'aria-labelledby': 'page-title' },
    built.nodes,
    h('p', { class: 'form-error', id: 'form-error', role: 'alert', tabindex: '-1' }),
    h(
      'div',
      { class: 'actions' },
      saveBtn,
      h('a', { href: `#/${kind}`, class: 'button' }, 'Back to list'),
      isNew ? null : h('button', { type: 'button', id: 'delete', class: 'danger', onclick: () => remove(kind, singular, id) }, 'Delete'),
    ),
    status,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    status.textContent = '';
    saveBtn.disabled = true;
    try {
      const body = built.collect();
      let res;
      if (isNew) {
        const newId = body.id;
        delete body.id;
        res = newId
          ? await api('PUT', objectPath(kind, newId), pruned(body))
          : await api('POST', kind, pruned(body));
        setFlash(`Created ${singular} ${res.value.id}.`);
        location.hash = `#/${kind}/${encodeURIComponent(res.value.id)}`;
      } else {
        res = await api('PATCH', objectPath(kind, id), body);
        setFlash(`Saved ${singular} ${id}.`);
        spec.reload();
      }
    } catch (e) {
      showErrors(form, e.message);
    } finally {
      saveBtn.disabled = false;
    }
  });
  replace(
    main,
    h('h1', { id: 'page-title' }, isNew ? `New ${singular}` : `${capital(singular)} ${id}`),
    h('div', { class: 'editor-layout' }, form, h('div', { class: 'aside' }, built.after || null)),
  );
}

/** Deletes an object after confirmation; back to its list. */
export async function remove(kind, singular, id, after) {
  const ok = await confirmDialog(`Delete ${singular} ${id}? This cannot be undone.`);
  if (!ok) return;
  try {
    await api('DELETE', objectPath(kind, id));
    setFlash(`Deleted ${singular} ${id}.`);
    if (after) after();
    else location.hash = `#/${kind}`;
  } catch (e) {
    const box = byId('form-error') || byId('list-error');
    if (box) box.textContent = e.message;
  }
}

/** `word` with a capital first letter. */
export function capital(word) {
  return word.charAt(0).toUpperCase() + word.slice(1);
}
