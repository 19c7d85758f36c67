// Upstreams: list, form (nodes, scheme, pass_host, TLS with the client certificate and CA
// certificate picked from existing objects) and "Test connection" (the probe).

import { api, objectPath } from './api.js';
import { h, byId, replace } from './dom.js';
import { editor, field, text, number, checkbox, select, valueOf, intOf, showFieldNotes } from './forms.js';
import { listPage } from './list.js';
import { probeView } from './probe.js';

/** Nodes as `[{host, port, weight}]`, from either APISIX form (list or `"host:port": weight`). */
export function nodeList(nodes) {
  if (Array.isArray(nodes)) return nodes.map((n) => ({ host: n.host, port: n.port, weight: n.weight, priority: n.priority }));
  return Object.entries(nodes || {}).map(([addr, weight]) => {
    const m = /^(.*):(\d+)$/.exec(addr);
    return m ? { host: m[1].replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]), weight } : { host: addr, weight };
  });
}

function nodesText(v) {
  return nodeList(v.nodes)
    .map((n) => `${n.host}${n.port ? ':' + n.port : ''}`)
    .join(', ');
}

/** The upstreams list. */
export function upstreamList(main) {
  return listPage(main, {
    kind: 'upstreams',
    title: 'Upstreams',
    singular: 'upstream',
    searchHint: 'node',
    columns: [
      ['Name', (v) => v.name],
      ['Scheme', (v) => v.scheme || 'http'],
      ['Nodes', nodesText],
      ['Client certificate', (v) => (v.tls && v.tls.client_cert_id !== undefined ? String(v.tls.client_cert_id) : '')],
      ['CA certificate', (v) => (v.tls && v.tls.ca_certificate_id !== undefined ? String(v.tls.ca_certificate_id) : '')],
    ],
    text: (v) => nodesText(v),
  });
}

/** `[value, label]` options for the certificates of `kind` (and ssl `type`), with subjects. */
function certChoices(certs, kind, type, current) {
  const opts = [['', 'None']];
  for (const c of certs) {
    if (c.kind !== kind || (type && c.type !== type && String(c.id) !== current)) continue;
    const label = `${c.name || c.id} — ${c.subject || c.error || 'unreadable'}${c.name ? ` (${c.id})` : ''}`;
    opts.push([String(c.id), label]);
  }
  if (current && !opts.some(([v]) => v === current)) opts.push([current, `${current} (not found)`]);
  return opts;
}

function nodeRows(container, rows) {
  const render = () => {
    replace(
      container,
      rows.map((n, i) =>
        h(
          'div',
          { class: 'node-row field', dataset: { path: `nodes[${i}]` }, role: 'group', 'aria-label': `Node ${i + 1}` },
          field(`nodes[${i}].host`, 'Host', text(`nodes[${i}].host`, n.host, { placeholder: '127.0.0.1 or name' })),
          field(`nodes[${i}].port`, 'Port', number(`nodes[${i}].port`, n.port, { min: 1, max: 65535 })),
          field(`nodes[${i}].weight`, 'Weight', number(`nodes[${i}].weight`, n.weight ?? 1, { min: 0 })),
          h(
            'button',
            {
              type: 'button',
              class: 'small',
              'aria-label': `Remove node ${i + 1}`,
              onclick: () => {
                save();
                rows.splice(i, 1);
                render();
              },
            },
            'Remove',
          ),
          h('p', { class: 'field-error', id: `f-nodes-${i}-error` }),
        ),
      ),
    );
  };
  const save = () => {
    rows.forEach((n, i) => {
      n.host = byId(`f-nodes-${i}-host`).value.trim();
      n.port = intOf(`nodes[${i}].port`);
      n.weight = intOf(`nodes[${i}].weight`);
    });
  };
  render();
  return {
    add() {
      save();
      rows.push({ host: '', port: null, weight: 1 });
      render();
      byId(`f-nodes-${rows.length - 1}-host`).focus();
    },
    collect() {
      save();
      return rows.map((n) => {
        const out = { host: n.host, port: n.port, weight: n.weight ?? 1 };
        if (n.priority !== undefined) out.priority = n.priority;
        if (out.port === null) delete out.port;
        return out;
      });
    },
  };
}

/** The upstream form. */
export async function upstreamForm(main, id, reload) {
  const value = id === null ? { nodes: [{ host: '', port: null, weight: 1 }] } : (await api('GET', objectPath('upstreams', id))).value;
  const status = await api('GET', 'status');
  editor(main, {
    kind: 'upstreams',
    singular: 'upstream',
    id,
    value,
    reload,
    build(v) {
      const tls = v.tls || {};
      const scheme = select('scheme', withCurrent([['http', 'http'], ['https', 'https']], v.scheme), v.scheme || 'http');
      const passHost = select('pass_host', [['pass', 'pass: the client\'s Host'], ['node', 'node: the node\'s host'], ['rewrite', 'rewrite: upstream_host']], v.pass_host || 'pass');
      const type = select('type', withCurrent([['roundrobin', 'roundrobin'], ['chash', 'chash'], ['ewma', 'ewma'], ['least_conn', 'least_conn']], v.type), v.type || 'roundrobin');
      const rowsBox = h('div', { class: 'node-rows' });
      const rows = nodeRows(rowsBox, nodeList(v.nodes));
      const clientId = tls.client_cert_id !== undefined ? String(tls.client_cert_id) : '';
      const caId = tls.ca_certificate_id !== undefined ? String(tls.ca_certificate_id) : '';
      const tlsBox = h(
        'fieldset',
        { class: 'field', id: 'tls', dataset: { path: 'tls' } },
        h('legend', {}, 'TLS to the nodes'),
        field('tls.client_cert_id', 'Client certificate', select('tls.client_cert_id', certChoices(status.certificates, 'ssls', 'client', clientId), clientId), 'An SSL object of type client: presented when the node asks for a certificate (mutual TLS).'),
        field('tls.ca_certificate_id', 'CA certificate', select('tls.ca_certificate_id', certChoices(status.certificates, 'ca_certificates', null, caId), caId), 'Verifies the nodes\' certificates; none: the system CA store.'),
        field('tls.verify', 'Verify the node certificate', checkbox('tls.verify', tls.verify !== false), 'Leave on: off accepts any certificate.'),
        field('tls.sni', 'SNI', text('tls.sni', tls.sni, { placeholder: 'test.com' }), 'The name sent and verified; empty: the Host the request is sent with.'),
        h('p', { class: 'field-error', id: 'f-tls-error' }),
      );
      const rewriteHost = field('upstream_host', 'Upstream host', text('upstream_host', v.upstream_host), 'The Host sent with pass_host: rewrite.');
      const chash = [
        field('hash_on', 'Hash on', select('hash_on', [['vars', 'vars'], ['header', 'header'], ['cookie', 'cookie'], ['consumer', 'consumer']], v.hash_on || 'vars')),
        field('key', 'Hash key', text('key', v.key, { placeholder: 'remote_addr' })),
      ];
      const sync = () => {
        tlsBox.hidden = scheme.value !== 'https';
        rewriteHost.hidden = passHost.value !== 'rewrite';
        for (const f of chash) f.hidden = type.value !== 'chash';
      };
      scheme.addEventListener('change', sync);
      passHost.addEventListener('change', sync);
      type.addEventListener('change', sync);
      sync();
      const nodes = [
        id === null ? field('id', 'ID', text('id', ''), 'Letters, digits, - _ . (up to 64). Leave empty to have one generated.') : null,
        field('name', 'Name', text('name', v.name)),
        field('type', 'Load balancing', type),
        chash,
        h(
          'fieldset',
          { class: 'field', dataset: { path: 'nodes' } },
          h('legend', {}, 'Nodes'),
          rowsBox,
          h('button', { type: 'button', id: 'add-node', onclick: () => rows.add() }, 'Add node'),
          h('p', { class: 'field-error', id: 'f-nodes-error' }),
        ),
        field('scheme', 'Scheme', scheme),
        field('pass_host', 'Host header (pass_host)', passHost),
        rewriteHost,
        tlsBox,
      ];
      return {
        nodes,
        after: id === null ? null : probeSection(id),
        collect() {
          const https = scheme.value === 'https';
          const out = {
            id: id === null ? valueOf('id') : undefined,
            name: valueOf('name'),
            type: type.value,
            hash_on: type.value === 'chash' ? byId('f-hash_on').value : null,
            key: type.value === 'chash' ? valueOf('key') : null,
            nodes: rows.collect(),
            scheme: scheme.value,
            pass_host: passHost.value,
            upstream_host: passHost.value === 'rewrite' ? valueOf('upstream_host') : null,
            tls: null,
          };
          if (https) {
            out.tls = {
              client_cert_id: valueOf('tls.client_cert_id'),
              ca_certificate_id: valueOf('tls.ca_certificate_id'),
              verify: byId('f-tls-verify').checked ? null : false,
              sni: valueOf('tls.sni'),
            };
            if (tls.client_cert !== undefined || tls.ca_certs !== undefined) {
              // Inline certificates set through the API stay as they are.
              delete out.tls.client_cert_id;
              delete out.tls.ca_certificate_id;
            }
          }
          return out;
        },
      };
    },
  });
}

function withCurrent(options, current) {
  return current && !options.some(([v]) => v === current) ? [...options, [current, current]] : options;
}

function probeSection(id) {
  const out = h('div', { id: 'probe-result', 'aria-live': 'polite' });
  const button = h('button', { type: 'button', id: 'test-connection', class: 'primary' }, 'Test connection');
  button.addEventListener('click', async () => {
    button.disabled = true;
    replace(out, h('p', { class: 'help' }, 'Connecting to each node…'));
    try {
      const report = await api('GET', `${objectPath('upstreams', id)}/probe`);
      replace(out, probeView(report));
      const notes = [];
      for (const u of report.upstreams || []) {
        for (const n of u.nodes || []) {
          for (const f of n.findings || []) {
            const field = f.severity === 'error' && f.field ? ownField(id, f.field) : null;
            if (field) notes.push({ field, message: f.message });
          }
        }
      }
      showFieldNotes(byId('editor'), notes);
    } catch (e) {
      replace(out, h('p', { class: 'form-error' }, e.message));
    } finally {
      button.disabled = false;
    }
  });
  return h(
    'section',
    { class: 'probe', 'aria-labelledby': 'probe-title' },
    h('h2', { id: 'probe-title' }, 'Test connection'),
    h('p', { class: 'help' }, 'Connects to each saved node as the proxy would (DNS, TCP, TLS with these settings, one HTTP request) and says what fails and which field to change. Save changes first.'),
    button,
    out,
  );
}

/**
 * The field of this upstream a probe finding names (the admin API's probe writes
 * `/apisix/upstreams/<id> tls.sni`), or null when it names another object.
 */
function ownField(id, field) {
  const prefix = `/apisix/upstreams/${id} `;
  return field.startsWith(prefix) ? field.slice(prefix.length) : null;
}
