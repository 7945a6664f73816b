import { h } from '../dom.js';
import { login } from '../api.js';

// loginPage asks for the API key; it is kept in sessionStorage (this tab only) and exchanged
// for short-lived browser tokens.
export function loginPage(done) {
  const input = h('input', { type: 'password', id: 'api-key', placeholder: 'tb_…', autocomplete: 'off', required: true });
  const error = h('p', { class: 'form-error', role: 'alert' });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', {
    class: 'login-card',
    onsubmit: async (e) => {
      e.preventDefault();
      button.disabled = true;
      error.textContent = '';
      try {
        await login(input.value.trim());
        done();
      } catch (err) {
        error.textContent = err.status === 401 ? 'That API key is not valid for this hub.' : `Could not sign in: ${err.message}`;
      } finally {
        button.disabled = false;
      }
    },
  },
  h('div', { class: 'login-brand' }, h('span', { class: 'logo big' }), h('h1', null, 'Tributary')),
  h('p', { class: 'muted' }, 'IoT event hub. Sign in with the hub\'s API key (hubd logs it at first start, and keeps it in <data-dir>/api-key).'),
  h('label', { for: 'api-key' }, 'API key'),
  input, error, button);
  setTimeout(() => input.focus(), 0);
  return { el: h('div', { class: 'login' }, form) };
}
