// The account page: sign in, the device list, rename, sign out. Built on
// the client kit in cookie mode, so the refresh token never reaches script.
import {
  createClient, login, logout, restore, sessions, rename, revoke, revokeOthers,
  fetch as authFetch, onChange, LoggedOutError, ResponseError,
} from "/account/authd.js";

const client = createClient({ baseUrl: "", mode: "cookie" });
const $ = (id) => document.getElementById(id);
const status = $("status");
const when = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

function say(text, isError = false) {
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function describe(error) {
  if (error instanceof LoggedOutError) return "You have been signed out.";
  if (error instanceof ResponseError) return error.description || error.code;
  return "authd could not be reached. Try again.";
}

function showSignIn() {
  $("devices").hidden = true;
  $("who").hidden = true;
  $("signin").hidden = false;
  $("device-list").replaceChildren();
}

async function showDevices() {
  const me = await (await authFetch(client, "/v1/me")).json();
  $("who").textContent = `Signed in as ${me.email}`;
  $("who").hidden = false;
  $("signin").hidden = true;
  $("devices").hidden = false;
  const list = await sessions(client);
  // The current device first, then the most recently used.
  list.sort((a, b) => Number(b.current) - Number(a.current) || b.last_used_at.localeCompare(a.last_used_at));
  $("device-list").replaceChildren(...list.map(deviceItem));
  $("signout-others").disabled = list.length < 2;
}

function deviceItem(session) {
  const item = $("device-template").content.firstElementChild.cloneNode(true);
  item.dataset.sessionId = session.id;
  item.classList.toggle("current", session.current);
  const q = (selector) => item.querySelector(selector);
  q(".device-name").textContent = session.device_name;
  q(".this-device").hidden = !session.current;
  const software = [session.browser, session.os].filter(Boolean).join(" on ");
  q(".device-browser").textContent = software || "Unknown";
  q(".device-ip").textContent = session.ip ?? "Unknown";
  const lastUsed = q(".device-last-used");
  lastUsed.dateTime = session.last_used_at;
  lastUsed.textContent = when.format(new Date(session.last_used_at));
  const label = session.current ? "this device" : session.device_name;
  q(".rename").setAttribute("aria-label", `Rename ${label}`);
  q(".revoke").setAttribute("aria-label", `Sign out ${label}`);

  const form = q(".rename-form");
  const input = form.elements.device_name;
  q(".rename").addEventListener("click", () => {
    form.hidden = false;
    input.value = session.device_name;
    input.focus();
    input.select();
  });
  q(".rename-cancel").addEventListener("click", () => {
    form.hidden = true;
    q(".rename").focus();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    act(async () => {
      const updated = await rename(client, session.id, input.value);
      say(`Renamed to “${updated.device_name}”.`);
    });
  });
  q(".revoke").addEventListener("click", () => {
    act(async () => {
      await revoke(client, session.id);
      if (!session.current) say(`Signed out “${session.device_name}”.`);
    });
  });
  return item;
}

/** Runs one user action, then shows the page as it now stands. */
async function act(work) {
  try {
    await work();
  } catch (error) {
    say(describe(error), true);
  }
  await refreshView();
}

async function refreshView() {
  try {
    await showDevices();
  } catch (error) {
    if (error instanceof LoggedOutError) showSignIn();
    else say(describe(error), true);
  }
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    await login(client, { username: form.elements.email.value, password: form.elements.password.value });
    form.reset();
    say("");
    await refreshView();
  } catch (error) {
    say(error instanceof ResponseError && error.code === "invalid_grant" ? "Wrong email or password." : describe(error), true);
  } finally {
    button.disabled = false;
  }
});

$("signout-others").addEventListener("click", () =>
  act(async () => {
    const count = await revokeOthers(client);
    say(count === 1 ? "Signed out 1 other device." : `Signed out ${count} other devices.`);
  }),
);

$("signout").addEventListener("click", async () => {
  await logout(client);
});

// A sign-out in another tab (or of this device from elsewhere) shows the form here too.
onChange(client, (event) => {
  if (event.type === "logout") {
    showSignIn();
    say(event.reason === "local" ? "You are signed out." : "You have been signed out.");
  }
});

document.body.dataset.ready = "false";
restore(client)
  .then((signedIn) => (signedIn ? refreshView() : showSignIn()))
  .catch((error) => {
    showSignIn();
    say(describe(error), true);
  })
  .finally(() => {
    document.body.dataset.ready = "true";
  });
