// Small DOM helpers. Text is always set as text (never parsed as HTML), so values from the
// admin API cannot inject markup.

/**
 * Creates an element: h('a', {href: '#/', class: 'x', onclick: fn}, 'text', child, [more]).
 * Attributes named on* add event listeners; `dataset` sets data-* attributes; a false,
 * null or undefined attribute is left out; true sets an empty attribute.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (name === 'value' && 'value' in el) {
      el.value = value;
    } else if (name === 'checked' || name === 'selected') {
      el[name] = Boolean(value);
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Appends children (strings, nodes, arrays of them; null skipped). */
export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** The element with id `id`. */
export function byId(id) {
  return document.getElementById(id);
}

/** A form control id for an API field path: `tls.client_cert_id` → `f-tls-client_cert_id`. */
export function fieldId(path) {
  return 'f-' + path.replace(/[.[\]]+/g, '-').replace(/-$/, '');
}

/** `n` days as words. */
export function daysText(days) {
  if (days === null || days === undefined) return 'unknown';
  if (days < 0) return `expired ${-days} day${days === -1 ? '' : 's'} ago`;
  return `${days} day${days === 1 ? '' : 's'} left`;
}
