import { login } from "../api.js";
import { flash, h } from "../util.js";

export function loginView(main, _args, query) {
  const user = h("input", { id: "username", name: "username", autocomplete: "username", required: true });
  const pass = h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = h("form", { class: "card login", id: "login-form" },
    h("h1", {}, "Sign in to Sluice"),
    h("label", { for: "username" }, "User name"), user,
    h("label", { for: "password" }, "Password"), pass,
    h("button", { class: "primary", type: "submit" }, "Sign in"));
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    try {
      await login(user.value, pass.value);
      location.hash = query.get("next") || "#/dags";
    } catch (err) {
      flash(form, err.message);
    }
  });
  main.append(form);
  user.focus();
}
