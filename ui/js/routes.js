// Routes and services: lists and forms.

import { api, objectPath, values } from './api.js';
import { h } from './dom.js';
import { editor, field, text, number, checkbox, select, valueOf, listOf, intOf } from './forms.js';
import { listPage } from './list.js';

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', 'CONNECT', 'TRACE'];

function uris(v) {
  return v.uris ? v.uris.join(', ') : v.uri || '';
}

function hostsOf(v) {
  return v.hosts ? v.hosts.join(', ') : v.host || '';
}

function target(v) {
  if (v.service_id !== undefined) return `service ${v.service_id}`;
  if (v.upstream_id !== undefined) return `upstream ${v.upstream_id}`;
  if (v.upstream) return 'inline upstream';
  return '';
}

/** The routes list. */
export function routeList(main) {
  return listPage(main, {
    kind: 'routes',
    title: 'Routes',
    singular: 'route',
    searchHint: 'URI, host',
    columns: [
      ['Name', (v) => v.name],
      ['URI', uris],
      ['Methods', (v) => (v.methods || []).join(' ') || 'any'],
      ['Hosts', hostsOf],
      ['Goes to', target],
    ],
    text: (v) => [uris(v), hostsOf(v), target(v)].join(' '),
  });
}

/** The services list. */
export function serviceList(main) {
  return listPage(main, {
    kind: 'services',
    title: 'Services',
    singular: 'service',
    searchHint: 'host',
    columns: [
      ['Name', (v) => v.name],
      ['Upstream', (v) => (v.upstream_id !== undefined ? String(v.upstream_id) : v.upstream ? 'inline' : '')],
      ['Hosts', (v) => (v.hosts || []).join(', ')],
    ],
    text: (v) => [(v.hosts || []).join(' '), String(v.upstream_id ?? '')].join(' '),
  });
}

/** Options for a select of the objects of `kind`: none, then `id — name`. */
async function choices(kind, none) {
  const list = values(await api('GET', kind));
  return [['', none], ...list.map((v) => [String(v.id), v.name ? `${v.name} (${v.id})` : String(v.id)])];
}

function idField(isNew, value) {
  return isNew
    ? field('id', 'ID', text('id', ''), 'Letters, digits, - _ . (up to 64). Leave empty to have one generated.')
    : null;
}

function readOnlyJson(title, value) {
  if (!value || (typeof value === 'object' && Object.keys(value).length === 0)) return null;
  return h(
    'section',
    { class: 'readonly', 'aria-label': title },
    h('h2', {}, title),
    h('p', { class: 'help' }, 'Shown read-only; change it with the admin API. Saving this form keeps it.'),
    h('pre', {}, JSON.stringify(value, null, 2)),
  );
}

/** The route form: new (`id` null) or an existing route. */
export async function routeForm(main, id, reload) {
  const value = id === null ? {} : (await api('GET', objectPath('routes', id))).value;
  const [services, upstreams] = await Promise.all([
    choices('services', 'None'),
    choices('upstreams', 'None'),
  ]);
  editor(main, {
    kind: 'routes',
    singular: 'route',
    id,
    value,
    reload,
    build(v) {
      const methods = new Set(v.methods || []);
      const boxes = METHODS.map((m) =>
        h('span', { class: 'method' }, h('input', { type: 'checkbox', id: `f-methods-${m}`, value: m, checked: methods.has(m) }), h('label', { for: `f-methods-${m}` }, m)),
      );
      const nodes = [
        idField(id === null, v),
        field('name', 'Name', text('name', v.name)),
        field('uri', 'URI', text('uri', uris(v), { required: true }), 'A path such as /hello, or a prefix such as /api/*. Several: separate with commas.', 'uris'),
        h(
          'fieldset',
          { class: 'field', dataset: { path: 'methods' }, 'aria-describedby': 'f-methods-error' },
          h('legend', {}, 'Methods'),
          h('p', { class: 'help' }, 'None checked: every method.'),
          h('div', { class: 'methods' }, boxes),
          h('p', { class: 'field-error', id: 'f-methods-error' }),
        ),
        field('hosts', 'Hosts', text('hosts', hostsOf(v)), 'Host names this route answers (commas between them); empty: any host.', 'host'),
        field('service_id', 'Service', select('service_id', services, v.service_id !== undefined ? String(v.service_id) : '')),
        field('upstream_id', 'Upstream', select('upstream_id', upstreams, v.upstream_id !== undefined ? String(v.upstream_id) : ''), 'Used instead of the service\'s upstream when set.'),
        field('priority', 'Priority', number('priority', v.priority ?? ''), 'Higher wins when several routes match (default 0).'),
        field('enable_websocket', 'Pass WebSocket upgrades', checkbox('enable_websocket', v.enable_websocket)),
      ];
      return {
        nodes,
        after: readOnlyJson('Plugins', v.plugins),
        collect() {
          const list = listOf('uri') || [];
          const m = METHODS.filter((x) => document.getElementById(`f-methods-${x}`).checked);
          const hosts = listOf('hosts');
          return {
            id: id === null ? valueOf('id') : undefined,
            name: valueOf('name'),
            uri: list.length === 1 ? list[0] : null,
            uris: list.length > 1 ? list : null,
            methods: m.length ? m : null,
            host: null,
            hosts,
            service_id: valueOf('service_id'),
            upstream_id: valueOf('upstream_id'),
            priority: intOf('priority'),
            enable_websocket: document.getElementById('f-enable_websocket').checked ? true : null,
          };
        },
      };
    },
  });
}

/** The service form. */
export async function serviceForm(main, id, reload) {
  const value = id === null ? {} : (await api('GET', objectPath('services', id))).value;
  const upstreams = await choices('upstreams', 'None');
  editor(main, {
    kind: 'services',
    singular: 'service',
    id,
    value,
    reload,
    build(v) {
      return {
        nodes: [
          idField(id === null, v),
          field('name', 'Name', text('name', v.name)),
          field('desc', 'Description', text('desc', v.desc)),
          field('upstream_id', 'Upstream', select('upstream_id', upstreams, v.upstream_id !== undefined ? String(v.upstream_id) : '')),
          field('hosts', 'Hosts', text('hosts', (v.hosts || []).join(', ')), 'Host names the service\'s routes answer (commas between them).'),
          field('enable_websocket', 'Pass WebSocket upgrades', checkbox('enable_websocket', v.enable_websocket)),
        ],
        after: [readOnlyJson('Inline upstream', v.upstream), readOnlyJson('Plugins', v.plugins)].filter(Boolean),
        collect() {
          return {
            id: id === null ? valueOf('id') : undefined,
            name: valueOf('name'),
            desc: valueOf('desc'),
            upstream_id: valueOf('upstream_id'),
            hosts: listOf('hosts'),
            enable_websocket: document.getElementById('f-enable_websocket').checked ? true : null,
          };
        },
      };
    },
  });
}
