// The probe report (GET /apisix/admin/upstreams/<id>/probe, docs/probe.md) as a verdict per
// node with the steps behind it.

import { h } from './dom.js';

function row(term, ...desc) {
  return [h('dt', {}, term), h('dd', {}, ...desc)];
}

function ms(x) {
  return typeof x === 'number' ? `${x.toFixed(1)} ms` : '';
}

function steps(n) {
  const out = [];
  const dns = n.dns || {};
  out.push(row('DNS', dns.error ? `failed: ${dns.error}` : dns.ip_literal ? `${dns.host} (an IP address)` : `${dns.host} → ${(dns.addresses || []).join(', ')}`));
  if (n.tcp) out.push(row('TCP', n.tcp.connected ? `connected in ${ms(n.tcp.ms)}` : `failed: ${n.tcp.error || n.tcp.failure}`));
  const t = n.tls;
  if (t) {
    out.push(row('TLS', t.completed ? `${t.version || ''} ${t.cipher || ''}${t.alpn ? ', ALPN ' + t.alpn : ''} in ${ms(t.ms)}` : `failed: ${t.alert ? 'alert ' + t.alert : t.error || 'handshake failed'}`));
    out.push(row('SNI', t.sni || 'none'));
    const leaf = (t.server_chain || [])[0];
    if (leaf) out.push(row('Node certificate', `${leaf.subject}, issued by ${leaf.issuer}${leaf.sans && leaf.sans.length ? ', names ' + leaf.sans.join(' ') : ''}`));
    const v = t.verification || {};
    out.push(
      row(
        'Verification',
        !t.verify ? 'off (tls.verify: false)' : v.ok ? `passed against ${v.trusted}` : `failed against ${v.trusted}: ${(v.errors || []).map((e) => e.reason).join('; ')}`,
      ),
    );
    const cc = t.client_cert || {};
    const sent = cc.configured ? `${cc.configured.source} (${cc.configured.cert.subject})` : 'none configured';
    out.push(row('Client certificate', `${cc.requested ? 'requested by the node' : 'not requested'}; ${sent}${cc.rejected ? '; refused: ' + cc.rejected : ''}`));
  }
  if (n.http) {
    const r = n.http;
    out.push(row('HTTP', `${r.request} (Host ${r.host}) → ${r.status ?? r.error ?? r.skipped ?? 'no answer'}`));
  }
  return out;
}

/** The report as elements. */
export function probeView(report) {
  const nodes = [];
  for (const u of report.upstreams || []) {
    for (const n of u.nodes || []) {
      // The verdict already says the first error (message: fix).
      const findings = (n.findings || []).filter((f) => (f.fix ? `${f.message}: ${f.fix}` : f.message) !== n.verdict);
      nodes.push(
        h(
          'article',
          { class: `probe-node ${n.healthy ? 'ok' : 'bad'}`, dataset: { node: n.node } },
          h('h3', {}, h('span', { class: `badge ${n.healthy ? 'ok' : 'bad'}` }, n.healthy ? 'Healthy' : 'Failing'), ' ', n.node),
          h('p', { class: 'verdict' }, n.verdict),
          h('dl', { class: 'steps' }, steps(n)),
          findings.length
            ? h(
                'ul',
                { class: 'findings' },
                findings.map((f) =>
                  h('li', { class: `finding ${f.severity}` }, h('strong', {}, `${f.severity}: `), f.message, f.fix ? h('span', { class: 'fix' }, ` — ${f.fix}`) : null),
                ),
              )
            : null,
        ),
      );
    }
  }
  return h(
    'div',
    { class: 'probe-report' },
    h('p', { class: `summary ${report.healthy ? 'ok' : 'bad'}`, id: 'probe-summary' }, report.healthy ? 'Every node answered.' : 'At least one node fails: see its verdict.'),
    nodes,
  );
}
