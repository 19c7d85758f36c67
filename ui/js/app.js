// The dashboard shell: sign-in with the admin API key, navigation, and the page for the
// address after '#' (`#/upstreams/u1`). Everything it shows comes from the admin API.

import { api, session, onUnauthorized } from './api.js';
import { h, byId, replace } from './dom.js';
import { overview } from './overview.js';
import { routeList, routeForm, serviceList, serviceForm } from './routes.js';
import { upstreamList, upstreamForm } from './upstreams.js';
import { sslList, sslForm, caList, caForm } from './certs.js';

const PAGES = {
  routes: [routeList, routeForm],
  services: [serviceList, serviceForm],
  upstreams: [upstreamList, upstreamForm],
  ssls: [sslList, sslForm],
  ca_certificates: [caList, caForm],
};

const main = byId('main');

function showSignIn(message) {
  byId('app').hidden = true;
  byId('signin').hidden = false;
  const err = byId('signin-key-error');
  err.textContent = message || '';
  const input = byId('signin-key');
  if (message) input.setAttribute('aria-invalid', 'true');
  else input.removeAttribute('aria-invalid');
  input.focus();
}

function showApp() {
  byId('signin').hidden = true;
  byId('app').hidden = false;
}

async function signIn(ev) {
  ev.preventDefault();
  const input = byId('signin-key');
  const key = input.value.trim();
  const button = byId('signin-submit');
  if (!key) {
    showSignIn('Enter the admin API key (gateway.admin.api_key).');
    return;
  }
  button.disabled = true;
  try {
    await api('GET', 'status', undefined, key);
    session.set(key);
    input.value = '';
    showApp();
    await render();
  } catch (e) {
    showSignIn(e.status === 401 ? `The admin API refused this key (${e.message}).` : e.message);
  } finally {
    button.disabled = false;
  }
}

function signOut() {
  session.clear();
  replace(main);
  showSignIn('');
}

function markNav(section) {
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.section === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

let rendering = 0;

/** Renders the page for the current address. */
async function render() {
  if (!session.key) {
    showSignIn('');
    return;
  }
  showApp();
  const mine = ++rendering;
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  const [section = '', id] = parts;
  markNav(section || 'overview');
  main.setAttribute('aria-busy', 'true');
  try {
    if (!section) {
      await overview(main);
    } else if (PAGES[section]) {
      const [list, form] = PAGES[section];
      if (id === undefined) await list(main);
      else await form(main, id === 'new' ? null : id, render);
    } else {
      replace(main, h('h1', { id: 'page-title' }, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the overview')));
    }
    if (mine === rendering) {
      document.title = `${byId('page-title')?.textContent || 'Dashboard'} · Pylon`;
      main.dataset.page = section || 'overview';
    }
  } catch (e) {
    if (e.status !== 401 && mine === rendering) {
      replace(main, h('h1', { id: 'page-title' }, 'Something went wrong'), h('p', { class: 'form-error', role: 'alert' }, e.message));
    }
  } finally {
    main.removeAttribute('aria-busy');
  }
}

onUnauthorized((msg) => {
  session.clear();
  showSignIn(`Signed out: the admin API no longer accepts the key (${msg}).`);
});

byId('signin-form').addEventListener('submit', signIn);
// The skip link focuses the content without changing the address (which names the page).
document.querySelector('.skip').addEventListener('click', (ev) => {
  ev.preventDefault();
  main.focus();
});
byId('signout').addEventListener('click', signOut);
window.addEventListener('hashchange', () => {
  render();
  main.focus();
});
render();
