// The overview: gateway facts, object counts, certificates expiring soonest, node health.

import { api } from './api.js';
import { h, replace, daysText } from './dom.js';

const KINDS = [
  ['routes', 'Routes'],
  ['services', 'Services'],
  ['upstreams', 'Upstreams'],
  ['ssls', 'SSL certificates'],
  ['ca_certificates', 'CA certificates'],
];

function nodeState(u, n) {
  if (!n.resolved) return ['bad', 'Not resolved'];
  if (!u.checks) return ['none', 'Not checked'];
  return n.healthy ? ['ok', 'Healthy'] : ['bad', 'Unhealthy'];
}

/** Renders the overview into `main`. */
export async function overview(main) {
  const [status, ...lists] = await Promise.all([api('GET', 'status'), ...KINDS.map(([k]) => api('GET', k))]);
  const certs = status.certificates.slice(0, 10);
  const nodes = [];
  for (const u of status.upstreams) {
    for (const n of u.nodes) nodes.push([u, n]);
  }
  replace(
    main,
    h('h1', { id: 'page-title' }, 'Overview'),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'gw-title' },
      h('h2', { id: 'gw-title' }, 'Gateway'),
      h(
        'dl',
        { class: 'facts-list', id: 'gateway-facts' },
        h('dt', {}, 'Pylon version'), h('dd', { id: 'pylon-version' }, status.pylon_version),
        h('dt', {}, 'Config provider'), h('dd', { id: 'config-provider' }, status.config_provider),
        h('dt', {}, 'Config source'), h('dd', {}, status.config_source),
        h('dt', {}, 'Config version'), h('dd', { id: 'config-version' }, String(status.config_version)),
      ),
    ),
    h(
      'section',
      { class: 'counts', 'aria-label': 'Objects' },
      KINDS.map(([k, label], i) =>
        h('a', { class: 'count-card', href: `#/${k}`, id: `count-${k}` }, h('span', { class: 'number' }, String(lists[i].total ?? 0)), h('span', { class: 'label' }, label)),
      ),
    ),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'exp-title' },
      h('h2', { id: 'exp-title' }, 'Certificates expiring soonest'),
      certs.length
        ? h(
            'div',
            { class: 'table-wrap' },
            h(
              'table',
              { id: 'expiring', class: 'stack' },
              h('thead', {}, h('tr', {}, ['Object', 'Subject', 'Expires', 'Days left'].map((t) => h('th', { scope: 'col' }, t)))),
              h(
                'tbody',
                {},
                certs.map((c) =>
                  h(
                    'tr',
                    { class: c.days_left !== null && c.days_left < 30 ? 'warn' : '' },
                    h('td', { dataset: { label: 'Object' } }, h('a', { href: `#/${c.kind}/${encodeURIComponent(c.id)}` }, `${c.kind === 'ssls' ? 'SSL' : 'CA'} ${c.name || c.id}`)),
                    h('td', { dataset: { label: 'Subject' } }, c.subject || c.error || ''),
                    h('td', { dataset: { label: 'Expires' } }, c.not_after ? c.not_after.slice(0, 10) : ''),
                    h('td', { class: 'days', dataset: { label: 'Days left' } }, daysText(c.days_left)),
                  ),
                ),
              ),
            ),
          )
        : h('p', { class: 'help' }, 'No certificates yet.'),
    ),
    h(
      'section',
      { class: 'card', 'aria-labelledby': 'health-title' },
      h('h2', { id: 'health-title' }, 'Upstream node health'),
      h('p', { class: 'help' }, 'As the health checks (checks.active / checks.passive) see each node now. Use Test connection on an upstream to try a node.'),
      nodes.length
        ? h(
            'div',
            { class: 'table-wrap' },
            h(
              'table',
              { id: 'node-health', class: 'stack' },
              h('thead', {}, h('tr', {}, ['Upstream', 'Node', 'Weight', 'State'].map((t) => h('th', { scope: 'col' }, t)))),
              h(
                'tbody',
                {},
                nodes.map(([u, n]) => {
                  const [cls, label] = nodeState(u, n);
                  const link = /^[\w.-]+$/.test(u.id) ? h('a', { href: `#/upstreams/${encodeURIComponent(u.id)}` }, u.id) : u.id;
                  return h(
                    'tr',
                    {},
                    h('td', { dataset: { label: 'Upstream' } }, link),
                    h('td', { dataset: { label: 'Node' } }, n.node),
                    h('td', { dataset: { label: 'Weight' } }, String(n.weight)),
                    h('td', { dataset: { label: 'State' } }, h('span', { class: `badge ${cls}` }, label)),
                  );
                }),
              ),
            ),
          )
        : h('p', { class: 'help' }, 'No upstreams in use.'),
    ),
  );
}
