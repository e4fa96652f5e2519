//! Logging in to the dashboard, in a real headless Chromium: the login form, what each
//! role sees and may click, the admin's Access panel (users, tokens, the audit log),
//! one-time login links, and the session cookie's attributes.

mod common;

use std::time::Duration;

use common::chromium::Browser;
use common::{Farm, wait_until};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// `text` as a JavaScript string literal.
fn js(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// The text of the first element matching `selector` ("" when there is none).
fn text_of(browser: &mut Browser, selector: &str) -> String {
    browser
        .eval(&format!(
            "document.querySelector({})?.textContent ?? ''",
            js(selector)
        ))
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The value of the input matching `selector` ("" when there is none).
fn value_of(browser: &mut Browser, selector: &str) -> String {
    browser
        .eval(&format!(
            "document.querySelector({})?.value ?? ''",
            js(selector)
        ))
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// How many elements match `selector`, shown or not.
fn count(browser: &mut Browser, selector: &str) -> u64 {
    browser
        .eval(&format!(
            "document.querySelectorAll({}).length",
            js(selector)
        ))
        .as_u64()
        .unwrap_or(0)
}

/// How many elements matching `selector` are laid out on the page (not hidden).
fn shown_count(browser: &mut Browser, selector: &str) -> u64 {
    browser
        .eval(&format!(
            "[...document.querySelectorAll({})].filter((e) => e.getClientRects().length > 0).length",
            js(selector)
        ))
        .as_u64()
        .unwrap_or(0)
}

fn shown(browser: &mut Browser, selector: &str) -> bool {
    shown_count(browser, selector) > 0
}

/// Clicks the first element matching `selector`; false when there is none.
fn click(browser: &mut Browser, selector: &str) -> bool {
    browser.eval(&format!(
        "(() => {{ const e = document.querySelector({}); if (!e) return false; e.click(); return true; }})()",
        js(selector)
    )) == json!(true)
}

/// Clicks `selector` as soon as it is on the page.
fn click_when_there(browser: &mut Browser, what: &str, selector: &str) {
    wait_until(what, WAIT, || click(browser, selector).then_some(()));
}

/// Sets an input's or select's value as typing would, with its input and change events.
fn set_value(browser: &mut Browser, selector: &str, value: &str) {
    let done = browser.eval(&format!(
        "(() => {{ const e = document.querySelector({}); if (!e) return false; e.value = {}; \
         e.dispatchEvent(new Event('input', {{ bubbles: true }})); \
         e.dispatchEvent(new Event('change', {{ bubbles: true }})); return true; }})()",
        js(selector),
        js(value)
    ));
    assert_eq!(done, json!(true), "no {selector} on the page");
}

/// Fills in the login form and submits it.
fn log_in(browser: &mut Browser, user: &str, password: &str) {
    set_value(browser, "#login-user", user);
    set_value(browser, "#login-password", password);
    assert!(click(browser, "#login-submit"), "no login button");
}

/// The status the page's own `fetch(path)` gets (with the browser's cookies).
fn status_from_page(browser: &mut Browser, path: &str) -> u64 {
    browser.eval(&format!(
        "window.furrowStatus = null; void fetch({}).then((r) => {{ window.furrowStatus = r.status; }}, () => {{ window.furrowStatus = -1; }})",
        js(path)
    ));
    wait_until("the page's fetch to answer", WAIT, || {
        browser.eval("window.furrowStatus").as_u64()
    })
}

/// Waits until the login form shows and the dashboard does not.
fn wait_for_login_form(browser: &mut Browser) {
    wait_until("the login form", WAIT, || {
        (shown(browser, "#login-form") && !shown(browser, "main")).then_some(())
    });
}

/// Job and agent controls, anywhere on the page (shown or hidden).
const ROW_CONTROLS: &str = "tr.job button, tr.agent button, tr.agent input, tr.task button";

/// Every control of jobs, tasks, agents and queues, when laid out on the page (the task
/// list's pager only browses).
const ALL_CONTROLS: &str = "#jobs button, #agents button, #agents input, #queues button, #queues input, #detail button:not(.page), #detail input:not(.page)";

fn submit_sleeper(farm: &Farm, token: &str, title: &str) -> i64 {
    let (status, job) = farm.send_as(
        token,
        "POST",
        "/api/v1/jobs/",
        Some(&json!({"title": title, "frames": "1-2", "params": {"command": ["sleep", "600"]}})),
    );
    assert_eq!(status, 201, "{job}");
    job["id"].as_i64().unwrap()
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(WAIT))
        .build()
        .into()
}

#[test]
fn a_viewer_logs_in_with_a_password_sees_no_controls_and_logs_out() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);
    let job = farm.submit(&[
        "--title",
        "seen-by-vera",
        "--frames",
        "1-2",
        "--wait",
        "--",
        "true",
    ]);
    farm.user_token("vera", "viewer");

    // A fresh browser: the login form, and nothing of the farm.
    let mut browser = Browser::open(
        &format!("http://{}/", farm.http),
        &root.path().join("chromium"),
    );
    wait_for_login_form(&mut browser);
    assert!(!browser.html().contains("seen-by-vera"));
    assert_eq!(count(&mut browser, "tr.job"), 0);
    assert_eq!(count(&mut browser, "tr.agent"), 0);
    assert_eq!(status_from_page(&mut browser, "/api/v1/me"), 401);
    // Logging in must not need a reload, which would wipe this.
    browser.eval("window.furrowTestMarker = 'still here'");

    // A wrong password: the server's reason, still no dashboard.
    log_in(&mut browser, "vera", "not-her-password");
    wait_until("the refusal on the form", WAIT, || {
        text_of(&mut browser, "#login-error")
            .contains("wrong user name or password")
            .then_some(())
    });
    assert!(!shown(&mut browser, "main"));
    assert_eq!(count(&mut browser, "tr.job"), 0);

    // The right one: the dashboard, her name and role in the header.
    log_in(&mut browser, "vera", "vera-password");
    let row = format!("tr.job[data-job-id=\"{job}\"]");
    wait_until("the dashboard with the job and the agent", WAIT, || {
        (text_of(&mut browser, &row).contains("seen-by-vera")
            && count(&mut browser, "tr.agent") == 1)
            .then_some(())
    });
    assert!(!shown(&mut browser, "#login-form"));
    assert_eq!(text_of(&mut browser, "#me-user"), "vera");
    assert_eq!(text_of(&mut browser, "#me-role"), "viewer");
    let header = text_of(&mut browser, "header");
    assert!(
        header.contains("vera") && header.contains("viewer"),
        "{header}"
    );
    assert_eq!(browser.eval("window.furrowTestMarker"), "still here");

    // No controls at all: none built for the rows, none shown anywhere.
    assert_eq!(count(&mut browser, ROW_CONTROLS), 0);
    assert_eq!(shown_count(&mut browser, ALL_CONTROLS), 0);
    // The job's page shows its tasks without controls, and no logs.
    assert!(click(&mut browser, &row));
    wait_until("the job's two tasks", WAIT, || {
        (count(&mut browser, "tr.task") == 2 && text_of(&mut browser, "#job-info").contains("done"))
            .then_some(())
    });
    assert_eq!(count(&mut browser, ROW_CONTROLS), 0);
    assert_eq!(shown_count(&mut browser, ALL_CONTROLS), 0);
    assert!(!shown(&mut browser, "#job-actions"));
    assert!(click(&mut browser, "tr.task"));
    wait_until("the log pane to say why there is no log", WAIT, || {
        text_of(&mut browser, "#log")
            .contains("vera has the viewer role")
            .then_some(())
    });
    // Her own tokens, not the admin's Access panel.
    assert_eq!(text_of(&mut browser, "#access-title"), "My tokens");
    assert!(shown(&mut browser, "#new-api-token"));
    for admin_only in ["#access-users", "#access-audit", "#new-join-token"] {
        assert!(!shown(&mut browser, admin_only), "{admin_only} is shown");
    }
    assert_eq!(count(&mut browser, "tr.user"), 0);
    assert_eq!(count(&mut browser, "tr.audit"), 0);

    // Log out: the form again, the farm gone from the page, the session dead.
    assert!(click(&mut browser, "#logout"));
    wait_for_login_form(&mut browser);
    assert_eq!(count(&mut browser, "tr.job"), 0);
    assert!(!browser.html().contains("seen-by-vera"));
    assert!(!shown(&mut browser, "#me"));
    assert_eq!(status_from_page(&mut browser, "/api/v1/me"), 401);

    // Logged in again, a session revoked elsewhere sends the page back to the form.
    log_in(&mut browser, "vera", "vera-password");
    wait_until("the dashboard again", WAIT, || {
        text_of(&mut browser, &row)
            .contains("seen-by-vera")
            .then_some(())
    });
    let (_, tokens) = farm.get("/api/v1/tokens/?all=true");
    let live: Vec<&Value> = tokens
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["user"] == "vera" && t["kind"] == "session" && t["revoked_at"].is_null())
        .collect();
    assert_eq!(live.len(), 1, "{tokens}");
    let (status, answer) = farm.send(
        "DELETE",
        &format!("/api/v1/tokens/{}", live[0]["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(status, 204, "{answer}");
    wait_for_login_form(&mut browser);
    assert!(
        text_of(&mut browser, "#login-error").contains("session has ended"),
        "{}",
        text_of(&mut browser, "#login-error")
    );
    assert_eq!(count(&mut browser, "tr.job"), 0);
}

#[test]
fn a_user_controls_her_own_jobs_only() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);
    let ulla = farm.user_token("ulla", "user");
    let hers = submit_sleeper(&farm, &ulla, "ulla-job");
    let admins = submit_sleeper(&farm, &farm.token, "admin-job");
    let (_, job) = farm.get(&format!("/api/v1/jobs/{hers}"));
    assert_eq!(job["user"], "ulla", "{job}");

    let mut browser = Browser::open(
        &format!("http://{}/", farm.http),
        &root.path().join("chromium"),
    );
    wait_for_login_form(&mut browser);
    log_in(&mut browser, "ulla", "ulla-password");
    let her_row = format!("tr.job[data-job-id=\"{hers}\"]");
    let admin_row = format!("tr.job[data-job-id=\"{admins}\"]");
    wait_until("both jobs listed", WAIT, || {
        (text_of(&mut browser, &her_row).contains("ulla-job")
            && text_of(&mut browser, &admin_row).contains("admin-job")
            && count(&mut browser, "tr.agent") == 1)
            .then_some(())
    });
    assert_eq!(text_of(&mut browser, "#me-role"), "user");
    // A quick action on her job, none on the admin's; no agent controls.
    assert_eq!(
        count(&mut browser, &format!("{her_row} button[data-job-action]")),
        1
    );
    assert_eq!(count(&mut browser, &format!("{admin_row} button")), 0);
    assert_eq!(count(&mut browser, "tr.agent button, tr.agent input"), 0);

    // Her job's page: its actions and task controls.
    assert!(click(&mut browser, &her_row));
    wait_until("her job's actions and task controls", WAIT, || {
        (shown(&mut browser, "#job-actions button[data-act=\"cancel\"]")
            && count(&mut browser, "tr.task") == 2
            && count(&mut browser, "tr.task button") >= 2)
            .then_some(())
    });
    // The admin's job: neither.
    assert!(click(&mut browser, &admin_row));
    // The page renders the job's title, info and tasks in steps: wait until all of it is
    // the admin's job, whose page then shows no control at all.
    wait_until("the admin's job without controls", WAIT, || {
        (text_of(&mut browser, "#detail-title").contains("admin-job")
            && count(&mut browser, "tr.task") == 2
            && text_of(&mut browser, "#job-info").contains("admin")
            && shown_count(&mut browser, "#detail button:not(.page)") == 0)
            .then_some(())
    });
    assert!(!shown(&mut browser, "#job-actions"));
    assert_eq!(count(&mut browser, "tr.task button"), 0);
    assert_eq!(shown_count(&mut browser, "#detail button:not(.page)"), 0);

    // Her quick button works.
    click_when_there(
        &mut browser,
        "her pause button",
        &format!("{her_row} button[data-job-action=\"pause\"]"),
    );
    farm.wait_job_until(hers, "her job paused from the page", WAIT, |j| {
        j["paused"] == true
    });
    // The server stays the authority: an action on the admin's job sent from her page
    // anyway is refused, and the refusal is shown.
    assert!(click(&mut browser, &her_row));
    wait_until("her job's action bar", WAIT, || {
        shown(&mut browser, "#job-actions button[data-act=\"cancel\"]").then_some(())
    });
    browser.eval(&format!("jobAction({admins}, 'pause')"));
    wait_until("the refusal on the page", WAIT, || {
        let error = text_of(&mut browser, "#action-error");
        (error.contains("belongs to") && error.contains("own jobs only")).then_some(())
    });
    let (_, job) = farm.get(&format!("/api/v1/jobs/{admins}"));
    assert_eq!(job["paused"], false, "{job}");

    for id in [hers, admins] {
        let (status, answer) = farm.send(
            "POST",
            &format!("/api/v1/jobs/{id}/actions"),
            Some(&json!({"action": "cancel"})),
        );
        assert_eq!(status, 200, "{answer}");
    }
}

/// Audit entries by `user` with `action` whose target contains `target`, from REST.
fn audited(farm: &Farm, user: &str, action: &str, target: &str) -> bool {
    let (status, page) = farm.get("/api/v1/audit/?limit=100");
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().iter().any(|a| {
        a["user"] == user
            && a["action"] == action
            && a["target"].as_str().unwrap_or_default().contains(target)
    })
}

#[test]
fn the_admin_manages_users_and_tokens_from_the_access_panel() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);
    // An API token to revoke from the page.
    let (status, made) = farm.send(
        "POST",
        "/api/v1/tokens/",
        Some(&json!({"label": "old-script"})),
    );
    assert_eq!(status, 201, "{made}");
    let old_id = made["view"]["id"].as_str().unwrap().to_string();
    let old_secret = made["token"].as_str().unwrap().to_string();

    let mut browser = Browser::open(&farm.login_url(), &root.path().join("chromium"));
    let old_row = format!("tr.token[data-token-id=\"{old_id}\"]");
    wait_until("the Access panel with the tokens", WAIT, || {
        (text_of(&mut browser, "#me-user") == "admin"
            && text_of(&mut browser, "#access-title") == "Access"
            && count(&mut browser, "tr.user[data-user=\"admin\"]") == 1
            && count(&mut browser, &format!("{old_row}[data-state=\"live\"]")) == 1)
            .then_some(())
    });
    assert_eq!(text_of(&mut browser, "#me-role"), "admin");
    assert!(shown(&mut browser, "#access-users"));
    assert!(shown(&mut browser, "#access-audit"));
    assert!(shown(&mut browser, "#new-join-token"));

    // Add a user by clicking.
    set_value(&mut browser, "#new-user-name", "nora");
    set_value(&mut browser, "#new-user-role", "operator");
    set_value(&mut browser, "#new-user-password", "nora-password-1");
    assert!(click(&mut browser, "#add-user"));
    let nora = "tr.user[data-user=\"nora\"]";
    wait_until("nora in the users list", WAIT, || {
        (count(&mut browser, &format!("{nora}[data-role=\"operator\"]")) == 1).then_some(())
    });
    assert_eq!(text_of(&mut browser, &format!("{nora} td.password")), "yes");
    assert_eq!(value_of(&mut browser, "#new-user-name"), "");
    let (_, users) = farm.get("/api/v1/users/");
    let added = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "nora")
        .unwrap_or_else(|| panic!("no nora in {users}"));
    assert_eq!(added["role"], "operator", "{users}");
    assert_eq!(added["has_password"], true, "{users}");
    // Her password works.
    let response = http()
        .post(&format!("http://{}/login", farm.http))
        .header("content-type", "application/json")
        .send(r#"{"user": "nora", "password": "nora-password-1"}"#)
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    // Change her role from the list.
    set_value(&mut browser, &format!("{nora} select.role"), "viewer");
    wait_until("nora a viewer", WAIT, || {
        let (_, users) = farm.get("/api/v1/users/");
        users
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "nora" && u["role"] == "viewer")
            .then_some(())
    });

    // A join token: its secret is shown once, with the note.
    set_value(&mut browser, "#new-token-label", "render-node-7");
    assert!(click(&mut browser, "#new-join-token"));
    let secret = wait_until("the join token's secret", WAIT, || {
        let secret = value_of(&mut browser, "#new-secret");
        secret.starts_with("fwj_").then_some(secret)
    });
    assert!(shown(&mut browser, "#new-secret"));
    assert!(text_of(&mut browser, "#new-secret-box").contains("not shown again"));
    let (_, tokens) = farm.get("/api/v1/tokens/?all=true");
    let join = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "join" && t["label"] == "render-node-7")
        .unwrap_or_else(|| panic!("no join token in {tokens}"))
        .clone();
    assert!(join["revoked_at"].is_null(), "{join}");
    let join_id = join["id"].as_str().unwrap();
    assert!(text_of(&mut browser, "#new-secret-box").contains(join_id));
    wait_until("the join token listed", WAIT, || {
        (count(
            &mut browser,
            &format!(
                "tr.token[data-token-id=\"{join_id}\"][data-kind=\"join\"][data-state=\"live\"]"
            ),
        ) == 1)
            .then_some(())
    });
    // Done: gone from the page, and a reload does not bring it back.
    assert!(click(&mut browser, "#dismiss-secret"));
    assert_eq!(value_of(&mut browser, "#new-secret"), "");
    assert!(!shown(&mut browser, "#new-secret-box"));
    browser.eval("window.furrowBeforeReload = true; setTimeout(() => location.reload(), 0)");
    wait_until("the page back after the reload", WAIT, || {
        (browser.eval("window.furrowBeforeReload === undefined") == json!(true)
            && count(
                &mut browser,
                &format!("tr.token[data-token-id=\"{join_id}\"]"),
            ) == 1)
            .then_some(())
    });
    let anywhere = browser.eval(&format!(
        "document.documentElement.outerHTML.includes({s}) || document.body.innerText.includes({s}) || \
         [...document.querySelectorAll('input')].some((i) => i.value.includes({s}))",
        s = js(&secret)
    ));
    assert_eq!(anywhere, json!(false), "the secret is still on the page");

    // A new API token from the page works as a bearer token.
    set_value(&mut browser, "#new-token-label", "from-the-page");
    assert!(click(&mut browser, "#new-api-token"));
    let api_secret = wait_until("the API token's secret", WAIT, || {
        let secret = value_of(&mut browser, "#new-secret");
        secret.starts_with("fwa_").then_some(secret)
    });
    let (status, who) = farm.send_as(&api_secret, "GET", "/api/v1/me", None);
    assert_eq!((status, &who["user"]), (200, &json!("admin")), "{who}");

    // Revoke the old token by clicking.
    assert_eq!(farm.send_as(&old_secret, "GET", "/api/v1/me", None).0, 200);
    assert!(click(
        &mut browser,
        &format!("{old_row} button[data-token-action=\"revoke\"]")
    ));
    wait_until("the old token shown revoked", WAIT, || {
        (count(&mut browser, &format!("{old_row}[data-state=\"revoked\"]")) == 1).then_some(())
    });
    assert_eq!(count(&mut browser, &format!("{old_row} button")), 0);
    let (_, tokens) = farm.get("/api/v1/tokens/?all=true");
    let old = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == old_id.as_str())
        .unwrap();
    assert!(!old["revoked_at"].is_null(), "{old}");
    assert_eq!(
        farm.send_as(&old_secret, "GET", "/api/v1/me", None).0,
        401,
        "a revoked token still works"
    );

    // All of it in the audit list on the page, and through REST.
    let expected = [
        ("user.add", "user nora (operator)".to_string()),
        ("user.edit", "user nora (role viewer)".to_string()),
        ("token.create", format!("join token {join_id}")),
        ("token.revoke", format!("api token {old_id}")),
    ];
    wait_until("the actions in the audit list", WAIT, || {
        let rows = browser.eval(
            "[...document.querySelectorAll('#audit-body tr.audit')].map((r) => [...r.children].map((c) => c.textContent))",
        );
        let rows = rows.as_array().cloned().unwrap_or_default();
        expected
            .iter()
            .all(|(action, target)| {
                rows.iter().any(|r| {
                    r[1] == "admin"
                        && r[2] == *action
                        && r[3].as_str().unwrap_or_default().contains(target.as_str())
                        && r[4] == "127.0.0.1"
                })
            })
            .then_some(())
    });
    for (action, target) in &expected {
        assert!(
            audited(&farm, "admin", action, target),
            "{action} {target} not audited"
        );
    }
}

#[test]
fn a_login_link_works_once() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);
    let link = farm.login_url();

    let mut first = Browser::open(&link, &root.path().join("chromium-1"));
    wait_until("the dashboard through the link", WAIT, || {
        (text_of(&mut first, "#me-user") == "admin" && count(&mut first, "tr.agent") == 1)
            .then_some(())
    });
    assert_eq!(status_from_page(&mut first, "/api/v1/me"), 200);

    // The same link in another browser: refused, and no dashboard.
    let mut second = Browser::open(&link, &root.path().join("chromium-2"));
    let text = wait_until("the refusal page", WAIT, || {
        let text = second
            .eval("document.body ? document.body.innerText : ''")
            .as_str()
            .unwrap_or_default()
            .to_string();
        text.contains("does not work").then_some(text)
    });
    assert!(text.contains("already used"), "{text}");
    assert_eq!(
        second.eval("document.getElementById('jobs') === null && document.getElementById('me-user') === null"),
        json!(true)
    );
    assert_eq!(status_from_page(&mut second, "/api/v1/me"), 401);

    // The first browser's session is not affected.
    assert_eq!(status_from_page(&mut first, "/api/v1/me"), 200);
    assert_eq!(text_of(&mut first, "#me-user"), "admin");
}

#[test]
fn the_session_cookie_is_http_only_strict_and_ends_at_logout() {
    let root = tempfile::tempdir().unwrap();
    let farm = Farm::up(root.path(), 1);
    farm.user_token("vera", "viewer");
    let agent = http();
    let login = format!("http://{}/login", farm.http);

    // A wrong password: 401 with the reason, and no cookie.
    let mut response = agent
        .post(&login)
        .header("content-type", "application/json")
        .send(r#"{"user": "vera", "password": "wrong-password"}"#)
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.headers().get("set-cookie").is_none());
    let answer: Value = response.body_mut().read_json().unwrap();
    assert_eq!(answer["error"], "login: wrong user name or password");

    // The right one: who she is, and the cookie.
    let mut response = agent
        .post(&login)
        .header("content-type", "application/json")
        .send(r#"{"user": "vera", "password": "vera-password"}"#)
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let cookie = response
        .headers()
        .get("set-cookie")
        .expect("a Set-Cookie header")
        .to_str()
        .unwrap()
        .to_string();
    let who: Value = response.body_mut().read_json().unwrap();
    assert_eq!(who, json!({"user": "vera", "role": "viewer"}));
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert!(attributes[0].starts_with("furrow_session=fws_"), "{cookie}");
    assert!(attributes.contains(&"HttpOnly"), "{cookie}");
    assert!(attributes.contains(&"SameSite=Strict"), "{cookie}");
    let max_age: u64 = attributes
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .unwrap_or_else(|| panic!("no Max-Age in {cookie}"))
        .parse()
        .unwrap();
    assert!(max_age > 0, "{cookie}");
    let session = attributes[0];

    // The cookie is a session, until logout.
    let me = format!("http://{}/api/v1/me", farm.http);
    let mut response = agent.get(&me).header("cookie", session).call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let who: Value = response.body_mut().read_json().unwrap();
    assert_eq!(who["user"], "vera");
    let response = agent
        .post(&format!("http://{}/logout", farm.http))
        .header("cookie", session)
        .header("content-type", "application/json")
        .send("{}")
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let cleared = response
        .headers()
        .get("set-cookie")
        .expect("a clearing Set-Cookie")
        .to_str()
        .unwrap();
    assert!(
        cleared.starts_with("furrow_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let response = agent.get(&me).header("cookie", session).call().unwrap();
    assert_eq!(response.status().as_u16(), 401);
}
