// Tributary dashboard: a small single-page application (hash routes) on the hub's HTTP API.
import './styles.css';
import { h, replace } from './dom.js';
import { hasKey, logout } from './api.js';
import { loginPage } from './pages/login.js';
import { devicesPage } from './pages/devices.js';
import { devicePage } from './pages/device.js';
import { rulesPage } from './pages/rules.js';
import { simsPage } from './pages/sims.js';
import { canariesPage, canaryPage } from './pages/canaries.js';

const routes = [
  [/^#?\/?$/, () => devicesPage()],
  [/^#\/devices\/?$/, () => devicesPage()],
  [/^#\/devices\/([^/]+)$/, (m) => devicePage(decodeURIComponent(m[1]))],
  [/^#\/rules\/?$/, () => rulesPage()],
  [/^#\/simulations\/?$/, () => simsPage()],
  [/^#\/canaries\/?$/, () => canariesPage()],
  [/^#\/canaries\/([^/]+)$/, (m) => canaryPage(decodeURIComponent(m[1]))],
];

const app = document.getElementById('app');
let current = null; // the page shown: { el, destroy() }

function nav() {
  const link = (href, label, match) =>
    h('a', { href, class: match.test(location.hash || '#/') ? 'active' : '' }, label);
  return h('nav', { class: 'sidebar' },
    h('a', { class: 'brand', href: '#/devices' },
      h('span', { class: 'logo' }), h('span', null, 'Tributary')),
    link('#/devices', 'Devices', /^#?\/?$|^#\/devices/),
    link('#/rules', 'Rules & alerts', /^#\/rules/),
    link('#/canaries', 'Canaries', /^#\/canaries/),
    link('#/simulations', 'Replays & simulations', /^#\/simulations/),
    h('div', { class: 'spacer' }),
    h('button', { class: 'link', onclick: () => logout() }, 'Sign out'));
}

function render() {
  if (current && current.destroy) current.destroy();
  current = null;
  if (!hasKey()) {
    current = loginPage(() => render());
    replace(app, current.el);
    return;
  }
  const hash = location.hash || '#/';
  let page = null;
  for (const [re, make] of routes) {
    const m = hash.match(re);
    if (m) {
      page = make(m);
      break;
    }
  }
  if (!page) page = { el: h('div', { class: 'page' }, h('h1', null, 'Not found'), h('p', null, h('a', { href: '#/devices' }, 'Back to devices'))) };
  current = page;
  replace(app, h('div', { class: 'shell' }, nav(), h('main', { class: 'content' }, page.el)));
}

window.addEventListener('hashchange', render);
window.addEventListener('tributary:logout', render);
render();
