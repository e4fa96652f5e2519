//! The dashboard's apps page in a real headless Chromium, on a real farm whose agent runs
//! a Python app behind managed nginx: the list and the detail show where it runs; the
//! configuration form is generated from the app's spec; bad values get their errors next
//! to their fields and change nothing; a good value is a new release the web server then
//! serves; Rollback serves the old release again; the output is searchable and followed;
//! a viewer gets neither Rollback nor the form's submit. The page never reloads.

mod common;

use std::time::Duration;

use common::apps::{APP_PY, readable_root, web_get, zip};
use common::chromium::Browser;
use common::{Farm, wait_until};
use serde_json::{Value, json};

/// Deploys, health checks and web server switches.
const DEPLOY: Duration = Duration::from_secs(90);
/// What the page shows after the server has it.
const PAGE: Duration = Duration::from_secs(30);

/// A line of output markup must not become part of the page.
const HOSTILE_LINE: &str = "<img src=x onerror=\"window.furrowInjected=1\">";

/// One field of each kind the form must render, in two sections.
const SPEC: &str = r#"fields:
  greeting: {type: string, required: true, default: hello, regex: "^[A-Za-z ]+$", message: letters and spaces only, help: What the app says, label: Greeting}
  workers: {type: int, min: 1, max: 8, default: 2, label: Workers}
  api_key: {type: secret, default: first-secret}
  mode: {type: choice, choices: [fast, safe], default: safe}
  verbose: {type: bool, default: false}
  timeout: {type: duration, default: 30s}
  hosts: {type: list, default: [a.example, b.example]}
sections:
  advanced: [mode, verbose, timeout, hosts]
"#;

fn python_app() -> Vec<u8> {
    let manifest = "name: hello\nversion: \"1.0\"\nprocesses:\n  web:\n    command: [\"python3\", \"src/app.py\"]\n    listen: port\n    health: /healthz\n    stop_grace: 2s\nmount:\n  path: /hello\n  process: web\n";
    zip(&[
        ("furrow-app.yaml", manifest.as_bytes()),
        ("config.spec.yaml", SPEC.as_bytes()),
        ("src/app.py", APP_PY.as_bytes()),
    ])
}

/// A free port on 127.0.0.1 (the local agent's web server).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn until_served(port: u16, path: &str, body: &str) {
    wait_until(&format!("{path} to say {body:?}"), DEPLOY, || {
        (web_get(port, path)? == (200, body.to_string())).then_some(())
    });
}

fn app(farm: &Farm) -> Value {
    let (status, app) = farm.get("/api/v1/apps/hello");
    assert_eq!(status, 200, "{app}");
    app
}

/// Waits until the one placement reports `running` at release `current`.
fn until_running(farm: &Farm, current: u64) {
    wait_until(
        &format!("hello running at release {current}"),
        DEPLOY,
        || {
            let app = app(farm);
            let placements = app["placements"].as_array()?;
            (placements.len() == 1
                && placements[0]["state"] == "running"
                && placements[0]["current"] == current)
                .then_some(())
        },
    );
}

/// Evaluates `js` in the page as a string ("" for anything else).
fn text(browser: &mut Browser, js: &str) -> String {
    browser.eval(js).as_str().unwrap_or_default().to_string()
}

/// Waits until `js` evaluates to a string for which `ok` holds, and returns it.
fn until_text(browser: &mut Browser, what: &str, js: &str, ok: impl Fn(&str) -> bool) -> String {
    wait_until(what, PAGE, || {
        let value = text(browser, js);
        ok(&value).then_some(value)
    })
}

/// JavaScript for the config form's row of `field`.
fn field_row(field: &str) -> String {
    format!("document.querySelector('#app-config-fields .field[data-field=\"{field}\"]')")
}

fn set_field(browser: &mut Browser, field: &str, value: &str) {
    browser.eval(&format!(
        "{}.querySelector('[name]').value = {}",
        field_row(field),
        json!(value)
    ));
}

fn field_error(browser: &mut Browser, field: &str) -> String {
    text(
        browser,
        &format!(
            "{}?.querySelector('.field-error').textContent ?? ''",
            field_row(field)
        ),
    )
}

fn submit_form(browser: &mut Browser) {
    browser.eval("document.getElementById('app-config-submit').click()");
}

#[test]
fn the_apps_page_shows_configures_and_rolls_back_a_deployed_app() {
    let root = readable_root("furrow-apps-ui-");
    let port = free_port();
    let farm = Farm::up_in(
        root.path().join("data"),
        1,
        &[
            "--webserver",
            "nginx",
            "--webserver-port",
            &port.to_string(),
        ],
    );
    wait_until("the agent's web server", Duration::from_secs(60), || {
        let (_, agents) = farm.get("/api/v1/agents/");
        let items = agents["items"].as_array()?;
        (items.len() == 1 && items[0]["webserver"]["kind"] == "nginx").then_some(())
    });
    let (status, created) = farm.post(
        "/api/v1/apps/",
        &json!({"name": "hello", "webserver": "nginx"}),
    );
    assert_eq!(status, 201, "{created}");
    let bundle = farm.data_dir.join("hello.zip");
    std::fs::write(&bundle, python_app()).unwrap();
    let out = farm.cli(&["app", "deploy", "hello", bundle.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    until_running(&farm, 1);
    until_served(port, "/hello", "hello");

    let mut browser = Browser::open(
        &format!("{}#app=hello", farm.login_url()),
        &root.path().join("chromium-admin"),
    );
    // The list: the app, its web server, its release, one placement running.
    let row = "document.querySelector('tr.app[data-app=\"hello\"]')";
    until_text(
        &mut browser,
        "the app listed as running",
        &format!("{row}?.dataset.running ?? ''"),
        |r| r == "1",
    );
    // Set once the page is up (after the login link's redirect): a reload would wipe it.
    browser.eval("window.furrowTestMarker = 'still here'");
    assert_eq!(
        text(
            &mut browser,
            &format!("{row}.querySelector('.webserver').textContent")
        ),
        "nginx"
    );
    assert_eq!(
        text(
            &mut browser,
            &format!("{row}.querySelector('.release').textContent")
        ),
        "#1 · 1.0"
    );
    assert_eq!(
        text(
            &mut browser,
            &format!("{row}.dataset.failed + {row}.dataset.reverted")
        ),
        "00"
    );

    // The detail: the agent's state, the serving release and the mount as a link.
    let agent = "document.querySelector('#app-agents-body tr.app-agent')";
    until_text(
        &mut browser,
        "the agent running the app",
        &format!("{agent}?.dataset.state ?? ''"),
        |s| s == "running",
    );
    assert_eq!(
        text(
            &mut browser,
            &format!("{agent}.querySelector('.serving').textContent")
        ),
        "#1"
    );
    assert_eq!(
        text(
            &mut browser,
            &format!("{agent}.querySelector('.mount a').href")
        ),
        format!("http://127.0.0.1:{port}/hello")
    );
    let instance =
        "document.querySelector('#app-instances-body tr.app-instance[data-instance=\"web.0\"]')";
    until_text(
        &mut browser,
        "the web.0 instance running with a pid",
        &format!(
            "({instance}?.dataset.state ?? '') + ' ' + ({instance}?.querySelector('.pid').textContent ?? '')"
        ),
        |s| s.starts_with("running ") && s[8..].parse::<u32>().is_ok(),
    );

    // The form: one widget per field type, in spec order, by section, prefilled.
    until_text(
        &mut browser,
        "the configuration form",
        "[...document.querySelectorAll('#app-config-fields .field')].map((f) => f.dataset.field).join(',')",
        |f| f == "greeting,workers,api_key,mode,verbose,timeout,hosts",
    );
    let widgets = text(
        &mut browser,
        "[...document.querySelectorAll('#app-config-fields .field [name]')].map((i) => i.name + '=' + i.tagName.toLowerCase() + ':' + (i.type || '')).join(',')",
    );
    assert_eq!(
        widgets,
        "greeting=input:text,workers=input:number,api_key=input:password,mode=select:select-one,\
         verbose=input:checkbox,timeout=input:text,hosts=textarea:textarea"
    );
    let workers = format!("{}.querySelector('input')", field_row("workers"));
    assert_eq!(
        text(
            &mut browser,
            &format!("{workers}.min + '-' + {workers}.max")
        ),
        "1-8"
    );
    assert_eq!(
        text(
            &mut browser,
            &format!(
                "[...{}.querySelectorAll('option')].map((o) => o.value).join(',')",
                field_row("mode")
            )
        ),
        "fast,safe"
    );
    let values = text(
        &mut browser,
        "[...document.querySelectorAll('#app-config-fields .field [name]')].map((i) => i.type === 'checkbox' ? String(i.checked) : i.value).join('|')",
    );
    assert_eq!(
        values,
        "hello|2|********|safe|false|30s|a.example\nb.example"
    );
    assert_eq!(
        text(
            &mut browser,
            "[...document.querySelectorAll('#app-config-fields fieldset')].map((s) => s.dataset.section).join(',')"
        ),
        ",advanced"
    );
    assert_eq!(
        text(
            &mut browser,
            &format!(
                "{}.querySelector('label').textContent",
                field_row("greeting")
            )
        ),
        "Greeting *"
    );
    assert_eq!(
        text(
            &mut browser,
            &format!(
                "{}.querySelector('.help').textContent",
                field_row("greeting")
            )
        ),
        "What the app says"
    );

    // The output, followed: markup in a line is text.
    browser.eval("document.getElementById('app-log-follow').click()");
    until_text(
        &mut browser,
        "the app's output",
        "document.getElementById('app-log').textContent",
        |log| log.contains("serving hello on") && log.contains(HOSTILE_LINE),
    );
    assert_eq!(browser.eval("typeof window.furrowInjected"), "undefined");

    // Two bad values: each error next to its field, nothing else changes.
    set_field(&mut browser, "greeting", "x1");
    set_field(&mut browser, "workers", "0");
    submit_form(&mut browser);
    let greeting_error = until_text(
        &mut browser,
        "the greeting's error",
        &format!(
            "{}.querySelector('.field-error').textContent",
            field_row("greeting")
        ),
        |e| !e.is_empty(),
    );
    assert!(
        greeting_error.contains("letters and spaces only"),
        "{greeting_error}"
    );
    let workers_error = field_error(&mut browser, "workers");
    assert!(workers_error.contains("at least 1"), "{workers_error}");
    for field in ["api_key", "mode", "verbose", "timeout", "hosts"] {
        assert_eq!(field_error(&mut browser, field), "", "{field}");
    }
    assert_eq!(
        text(
            &mut browser,
            "document.getElementById('app-config-error').textContent"
        ),
        ""
    );
    assert_eq!(
        text(
            &mut browser,
            "document.getElementById('app-config-result').textContent"
        ),
        ""
    );
    let now = app(&farm);
    assert_eq!(now["current"], 1, "{now}");
    assert_eq!(now["releases"].as_array().unwrap().len(), 1, "{now}");
    // The values typed stay for correcting.
    assert_eq!(
        text(
            &mut browser,
            &format!("{}.querySelector('[name]').value", field_row("greeting"))
        ),
        "x1"
    );

    // A good greeting: release 2, served through the web server; the secret sent back
    // masked keeps its value.
    set_field(&mut browser, "greeting", "Bonjour");
    set_field(&mut browser, "workers", "3");
    submit_form(&mut browser);
    until_text(
        &mut browser,
        "the new release number",
        "document.getElementById('app-config-result').textContent",
        |r| r == "Saved as release 2.",
    );
    assert_eq!(field_error(&mut browser, "greeting"), "");
    let (_, config) = farm.get("/api/v1/apps/hello/config");
    assert_eq!(config["greeting"], "Bonjour", "{config}");
    assert_eq!(config["workers"], 3, "{config}");
    assert_eq!(config["api_key"], "********", "{config}");
    until_running(&farm, 2);
    until_served(port, "/hello", "Bonjour");
    assert_eq!(
        web_get(port, "/hello/key"),
        Some((200, "first-secret".into()))
    );
    // The page follows: the release, the history, the output.
    until_text(
        &mut browser,
        "the page at release 2",
        "document.getElementById('app-current').dataset.release",
        |r| r == "2",
    );
    until_text(
        &mut browser,
        "the history's newest event",
        "document.querySelector('#app-history-body tr.app-event')?.dataset.action ?? ''",
        |a| a == "configured" || a == "running",
    );
    until_text(
        &mut browser,
        "the new output, followed",
        "document.getElementById('app-log').textContent",
        |log| log.contains("serving Bonjour on"),
    );

    // Rollback to release 1 from its row.
    let rollback = "document.querySelector('tr.app-release[data-release=\"1\"] button[data-app-action=\"rollback\"]')";
    assert_eq!(
        browser.eval("!!document.querySelector('tr.app-release[data-release=\"2\"] button[data-app-action=\"rollback\"]')"),
        false,
        "the current release has no Rollback"
    );
    browser.eval(&format!("{rollback}.click()"));
    wait_until("release 1 current again", PAGE, || {
        (app(&farm)["current"] == 1).then_some(())
    });
    until_running(&farm, 1);
    until_served(port, "/hello", "hello");
    until_text(
        &mut browser,
        "the page at release 1",
        "document.getElementById('app-current').dataset.release",
        |r| r == "1",
    );
    until_text(
        &mut browser,
        "the rollback in the history",
        "[...document.querySelectorAll('#app-history-body tr.app-event')].map((r) => r.dataset.action).join(',')",
        |a| a.contains("rolled back"),
    );
    // The form shows release 1's values again.
    until_text(
        &mut browser,
        "the form at release 1",
        &format!(
            "{}?.querySelector('[name]').value ?? ''",
            field_row("greeting")
        ),
        |g| g == "hello",
    );

    // A search: only the matching lines.
    browser.eval(
        "document.getElementById('app-log-follow').click(); \
         document.getElementById('app-log-q').value = '^serving Bonjour'; \
         document.getElementById('app-log-search').click()",
    );
    let found = until_text(
        &mut browser,
        "the search's lines",
        "document.getElementById('app-log').textContent",
        |log| log.contains("serving Bonjour on") && !log.contains("serving hello"),
    );
    assert!(!found.contains(HOSTILE_LINE), "{found}");
    browser.eval(
        "document.getElementById('app-log-q').value = '('; document.getElementById('app-log-search').click()",
    );
    until_text(
        &mut browser,
        "a bad pattern refused",
        "document.getElementById('app-log-error').textContent",
        |e| e.contains("not a regular expression"),
    );

    assert_eq!(
        browser.eval("window.furrowTestMarker"),
        "still here",
        "the page must not reload"
    );
    assert_eq!(browser.eval("typeof window.furrowInjected"), "undefined");

    // A viewer: the same app, read only.
    let viewer = farm.user_token("watcher", "viewer");
    let mut watcher = Browser::open(
        &format!("{}#app=hello", farm.login_url_for(&viewer)),
        &root.path().join("chromium-viewer"),
    );
    until_text(
        &mut watcher,
        "the viewer's releases and form",
        "document.querySelectorAll('tr.app-release').length + ' ' + document.querySelectorAll('#app-config-fields .field').length",
        |n| n == "2 7",
    );
    assert_eq!(
        watcher.eval("document.querySelectorAll('button[data-app-action=\"rollback\"]').length"),
        0
    );
    assert_eq!(
        watcher.eval("document.getElementById('app-config-submit').offsetParent === null"),
        true,
        "a viewer has no submit"
    );
    assert_eq!(
        text(
            &mut watcher,
            "document.getElementById('app-config-note').textContent"
        ),
        "Changing the configuration is for operators; watcher has the viewer role."
    );
    assert_eq!(
        watcher.eval(
            "[...document.querySelectorAll('#app-config-fields [name]')].every((i) => i.disabled)"
        ),
        true
    );
    assert_eq!(
        text(
            &mut watcher,
            "document.querySelector('#app-agents-body tr.app-agent')?.dataset.state ?? ''"
        ),
        "running"
    );
    // A change made elsewhere reaches the open page through the change feed alone.
    watcher.eval("window.furrowTestMarker = 'still here'");
    let (status, made) = farm.send(
        "PUT",
        "/api/v1/apps/hello/config",
        Some(&json!({"greeting": "Hola"})),
    );
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["release"], 3, "{made}");
    until_text(
        &mut watcher,
        "the viewer's page at release 3",
        "document.querySelector('tr.app[data-app=\"hello\"] .release').textContent + ' ' + \
         document.getElementById('app-current').dataset.release + ' ' + \
         document.querySelectorAll('tr.app-release').length",
        |t| t == "#3 · 1.0 3 3",
    );
    until_text(
        &mut watcher,
        "the viewer's form at release 3",
        &format!(
            "{}?.querySelector('[name]').value ?? ''",
            field_row("greeting")
        ),
        |g| g == "Hola",
    );
    until_text(
        &mut watcher,
        "the agent serving release 3 on the viewer's page",
        "document.querySelector('#app-agents-body tr.app-agent .serving')?.textContent ?? ''",
        |s| s == "#3",
    );
    until_served(port, "/hello", "Hola");
    assert_eq!(watcher.eval("window.furrowTestMarker"), "still here");

    // The server refuses a viewer's change anyway.
    let (status, _) = farm.send_as(
        &viewer,
        "PUT",
        "/api/v1/apps/hello/config",
        Some(&json!({"greeting": "Hola"})),
    );
    assert_eq!(status, 403);

    // Deleted elsewhere: the app leaves the list and its open detail closes.
    let (status, deleted) = farm.send("DELETE", "/api/v1/apps/hello", None);
    assert_eq!(status, 204, "{deleted}");
    until_text(
        &mut browser,
        "the deleted app gone from the page",
        "String(!!document.querySelector('tr.app[data-app=\"hello\"]')) + ' ' + \
         document.getElementById('app-detail').hidden + ' ' + document.getElementById('apps-empty').hidden",
        |t| t == "false true false",
    );
    assert_eq!(browser.eval("window.furrowTestMarker"), "still here");
}
