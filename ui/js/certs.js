// SSL certificates (ssls) and CA certificates: lists, and forms that take a file or pasted
// PEM and show what it is (POST /apisix/admin/certificates/inspect) before saving.
// Private keys are sent when saving and never shown again (the API never returns them).

import { api, objectPath } from './api.js';
import { h, byId, replace, daysText } from './dom.js';
import { editor, field, text, select, textarea, valueOf, listOf, clearErrors, showFieldNotes } from './forms.js';
import { listPage } from './list.js';

async function certStatus() {
  return (await api('GET', 'status')).certificates || [];
}

function expiryCell(certs, kind) {
  return (v) => {
    const c = certs.find((x) => x.kind === kind && String(x.id) === String(v.id));
    if (!c) return '';
    if (c.error) return c.error;
    return h('span', { class: c.days_left < 30 ? 'warn' : '' }, `${c.not_after.slice(0, 10)} (${daysText(c.days_left)})`);
  };
}

function subjectCell(certs, kind) {
  return (v) => {
    const c = certs.find((x) => x.kind === kind && String(x.id) === String(v.id));
    return c ? c.subject || '' : '';
  };
}

/** The SSL certificates list. */
export async function sslList(main) {
  const certs = await certStatus();
  return listPage(main, {
    kind: 'ssls',
    title: 'SSL certificates',
    singular: 'SSL certificate',
    searchHint: 'SNI, subject',
    columns: [
      ['Name', (v) => v.name],
      ['Type', (v) => v.type || 'server'],
      ['SNIs', (v) => (v.snis || (v.sni ? [v.sni] : [])).join(', ')],
      ['Subject', subjectCell(certs, 'ssls')],
      ['Expires', expiryCell(certs, 'ssls')],
    ],
    text: (v) => [(v.snis || []).join(' '), v.sni || '', subjectCell(certs, 'ssls')(v)].join(' '),
  });
}

/** The CA certificates list. */
export async function caList(main) {
  const certs = await certStatus();
  return listPage(main, {
    kind: 'ca_certificates',
    title: 'CA certificates',
    singular: 'CA certificate',
    searchHint: 'subject',
    columns: [
      ['Name', (v) => v.name],
      ['Subject', subjectCell(certs, 'ca_certificates')],
      ['Expires', expiryCell(certs, 'ca_certificates')],
    ],
    text: (v) => subjectCell(certs, 'ca_certificates')(v),
  });
}

/** A PEM field: a file picker and a text area for `path` (`cert` or `key`). */
function pemField(path, label, value, opts) {
  const area = textarea(path, value, { rows: 8, placeholder: opts.placeholder || '' });
  const file = h('input', { type: 'file', id: `f-${path}-file`, accept: '.pem,.crt,.cer,.key,text/plain' });
  file.addEventListener('change', async () => {
    const f = file.files && file.files[0];
    if (!f) return;
    area.value = await f.text();
    area.dispatchEvent(new Event('input', { bubbles: true }));
  });
  return h(
    'div',
    { class: 'pem' },
    h('div', { class: 'field file' }, h('label', { for: file.id }, `${label} file`), file),
    field(path, `${label} (PEM)`, area, opts.help, opts.alias),
  );
}

function factsView(result, hasKey) {
  const items = [];
  (result.certificates || []).forEach((c, i) => {
    items.push(
      h(
        'section',
        { class: 'cert-facts', 'aria-label': `Certificate ${i + 1}` },
        h('h3', {}, i === 0 ? 'Certificate' : `Chain certificate ${i}`),
        h(
          'dl',
          {},
          h('dt', {}, 'Subject'), h('dd', { class: 'subject' }, c.subject),
          h('dt', {}, 'Names (SANs)'), h('dd', { class: 'sans' }, c.sans.length ? c.sans.join(', ') : 'none'),
          h('dt', {}, 'Issuer'), h('dd', { class: 'issuer' }, c.issuer + (c.self_signed ? ' (self-signed)' : '')),
          h('dt', {}, 'Valid'), h('dd', { class: 'validity' }, `${c.not_before} to ${c.not_after} (${daysText(c.days_left)})`),
          h('dt', {}, 'Key type'), h('dd', { class: 'key-type' }, c.key_type),
          h('dt', {}, 'Extended key usage'), h('dd', { class: 'eku' }, c.extended_key_usage ? c.extended_key_usage.join(', ') || 'none known' : 'not restricted'),
          h('dt', {}, 'CA'), h('dd', {}, c.is_ca ? 'yes' : 'no'),
          h('dt', {}, 'SHA-256'), h('dd', { class: 'fingerprint' }, c.sha256),
        ),
      ),
    );
  });
  if (result.key) {
    items.push(
      h('p', { class: `key-facts ${result.key.matches ? 'ok' : 'bad'}`, id: 'key-facts' }, `Private key: ${result.key.key_type}, ${result.key.matches ? 'matches the certificate' : 'does NOT match the certificate'}.`),
    );
  } else if (hasKey === 'stored') {
    items.push(h('p', { class: 'key-facts', id: 'key-facts' }, 'Private key: stored, never shown. Paste or upload a new one to replace it.'));
  }
  for (const w of result.warnings || []) items.push(h('p', { class: 'warn' }, `${w.field}: ${w.message}`));
  return items;
}

/** Runs the inspect endpoint on the form's PEM fields and shows the result. */
function inspector(kind, form, out, stored) {
  let timer = null;
  let seq = 0;
  const run = async () => {
    const cert = byId('f-cert').value;
    if (!cert.trim()) {
      replace(out);
      return;
    }
    const body = { cert, type: kind === 'ca_certificates' ? 'ca' : byId('f-type').value };
    const key = kind === 'ssls' ? byId('f-key').value : '';
    if (key.trim()) body.key = key;
    const pass = kind === 'ssls' ? byId('f-key_passphrase').value : '';
    if (pass) body.key_passphrase = pass;
    const mine = ++seq;
    try {
      const result = await api('POST', 'certificates/inspect', body);
      if (mine !== seq) return;
      clearErrors(form);
      replace(out, h('h2', {}, 'What this is'), factsView(result, key.trim() ? 'new' : stored ? 'stored' : 'none'));
      showFieldNotes(form, result.problems || []);
      out.dataset.state = (result.problems || []).length ? 'problems' : 'ok';
    } catch (e) {
      replace(out, h('p', { class: 'form-error' }, e.message));
    }
  };
  return {
    soon() {
      clearTimeout(timer);
      timer = setTimeout(run, 250);
    },
    run,
  };
}

/** The SSL certificate form (`ssls`). */
export async function sslForm(main, id, reload) {
  return certForm(main, 'ssls', 'SSL certificate', id, reload);
}

/** The CA certificate form. */
export async function caForm(main, id, reload) {
  return certForm(main, 'ca_certificates', 'CA certificate', id, reload);
}

async function certForm(main, kind, singular, id, reload) {
  const value = id === null ? {} : (await api('GET', objectPath(kind, id))).value;
  const facts = h('div', { id: 'facts', class: 'facts', 'aria-live': 'polite' });
  editor(main, {
    kind,
    singular,
    id,
    value,
    reload,
    build(v) {
      const ssl = kind === 'ssls';
      const typeSel = ssl ? select('type', [['server', 'server: served to clients for its SNIs'], ['client', 'client: presented to upstreams (mutual TLS)']], v.type || 'server') : null;
      const snis = ssl ? field('snis', 'SNIs', text('snis', (v.snis || (v.sni ? [v.sni] : [])).join(', ')), 'Names this certificate serves (commas between them).', 'sni') : null;
      const nodes = [
        id === null ? field('id', 'ID', text('id', ''), 'Letters, digits, - _ . (up to 64). Leave empty to have one generated.') : null,
        field('name', 'Name', text('name', v.name)),
        ssl ? field('type', 'Type', typeSel) : null,
        snis,
        pemField('cert', 'Certificate', v.cert || (v.certs || [])[0] || '', { help: 'The certificate first, then its chain.', alias: 'certs' }),
        ssl
          ? pemField('key', 'Private key', '', {
              help: id === null ? 'Never shown again after saving.' : 'Stored and never shown. Leave empty to keep it.',
              placeholder: id === null ? '' : 'stored — not shown',
              alias: 'keys',
            })
          : null,
        ssl ? field('key_passphrase', 'Key passphrase', h('input', { type: 'password', id: 'f-key_passphrase', autocomplete: 'off' }), 'Only for an encrypted key.') : null,
      ];
      const originalCert = v.cert || '';
      return {
        nodes,
        after: facts,
        collect() {
          const out = { id: id === null ? valueOf('id') : undefined, name: valueOf('name') };
          const cert = byId('f-cert').value.trim() ? byId('f-cert').value : null;
          if (id === null || cert !== originalCert) out.cert = cert;
          if (ssl) {
            out.type = typeSel.value;
            out.snis = typeSel.value === 'server' ? listOf('snis') : null;
            out.sni = null;
            const key = byId('f-key').value.trim() ? byId('f-key').value : null;
            if (key) out.key = key;
            const pass = byId('f-key_passphrase').value;
            if (pass) out.key_passphrase = pass;
          }
          return out;
        },
      };
    },
  });
  const form = byId('editor');
  const insp = inspector(kind, form, facts, id !== null);
  for (const f of ['f-cert', 'f-key', 'f-type', 'f-key_passphrase']) {
    const el = byId(f);
    if (el) el.addEventListener(el.tagName === 'SELECT' ? 'change' : 'input', insp.soon);
  }
  const snis = form.querySelector('[data-path="snis"]');
  const typeSel = byId('f-type');
  if (snis && typeSel) {
    const sync = () => {
      snis.hidden = typeSel.value !== 'server';
    };
    typeSel.addEventListener('change', sync);
    sync();
  }
  if (byId('f-cert').value.trim()) insp.run();
}
