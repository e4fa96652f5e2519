//! The spec's contract: parsing both formats, validation reporting every problem, secrets,
//! rendering round trips and the form description.

use serde_json::{Map, Value, json};

use super::*;

const YAML_SPEC: &str = r#"
fields:
  greeting: {type: string, required: true, default: hello, regex: "^[A-Za-z ]+$", message: letters and spaces only, help: What the app says}
  workers: {type: int, min: 1, max: 8, default: 2}
  secret_key: {type: secret}
  mode: {type: choice, choices: [fast, safe], default: safe}
  timeout: {type: duration, min: 1s, max: 1h, default: 30s}
  upload: {type: size, max: 1G, default: 512M}
  hosts: {type: list, item: "^[a-z.]+$", max: 3}
  ratio: {type: float, min: 0, max: 1}
  debug: {type: bool, default: false}
  admin: {type: email}
  site: {type: url}
  db_host: {type: host}
  db_port: {type: port}
  data: {type: path}
  motd: {type: text, max_length: 100}
sections:
  advanced: [workers, timeout]
"#;

const INI_SPEC: &str = "
[greeting]
type = string
required = true
default = hello
regex = ^[A-Za-z ]+$
message = letters and spaces only

[workers]
type = int
min = 1
max = 8
default = 2

[secret_key]
type = secret

[mode]
type = choice
choices = fast, safe
default = safe

[hosts]
type = list

[sections]
advanced = workers, mode
";

fn input(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn yaml_spec() -> Spec {
    Spec::parse(YAML_SPEC, SpecFormat::Yaml).unwrap()
}

#[test]
fn yaml_spec_keeps_field_order_and_fills_defaults() {
    let spec = yaml_spec();
    let names: Vec<&str> = spec.fields().map(Field::name).collect();
    assert_eq!(&names[..4], ["greeting", "workers", "secret_key", "mode"]);
    let config = spec.validate(&Map::new()).unwrap();
    assert_eq!(config.get("greeting"), Some(&json!("hello")));
    assert_eq!(config.get("workers"), Some(&json!(2)));
    assert_eq!(config.get("timeout"), Some(&json!(30)));
    assert_eq!(config.get("upload"), Some(&json!(512u64 << 20)));
    assert_eq!(config.get("secret_key"), None);
    assert_eq!(
        config.values().keys().next().map(String::as_str),
        Some("greeting")
    );
}

#[test]
fn ini_spec_reads_like_yaml() {
    let spec = Spec::parse(INI_SPEC, SpecFormat::Ini).unwrap();
    assert_eq!(spec.format(), SpecFormat::Ini);
    assert_eq!(spec.field("mode").unwrap().section(), Some("advanced"));
    assert_eq!(spec.field("greeting").unwrap().section(), None);
    let config = spec
        .validate(&input(json!({"workers": "3", "hosts": "a, b"})))
        .unwrap();
    assert_eq!(config.get("workers"), Some(&json!(3)));
    assert_eq!(config.get("hosts"), Some(&json!(["a", "b"])));
    let problems = spec
        .validate(&input(json!({"greeting": "no digits 1"})))
        .unwrap_err();
    assert_eq!(
        problems,
        vec![crate::Problem::new("greeting", "letters and spaces only")]
    );
}

#[test]
fn validation_reports_every_problem_naming_its_field() {
    let spec = yaml_spec();
    let problems = spec
        .validate(&input(json!({
            "greeting": "hi 2",
            "workers": 9,
            "mode": "slow",
            "timeout": "2h",
            "upload": "2G",
            "hosts": ["a", "B"],
            "ratio": "x",
            "debug": "perhaps",
            "admin": "nobody",
            "site": "example.com",
            "db_host": "bad host",
            "db_port": 70000,
            "nonsense": 1,
        })))
        .unwrap_err();
    let fields: Vec<&str> = problems
        .iter()
        .map(|problem| problem.path.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "nonsense", "greeting", "workers", "mode", "timeout", "upload", "hosts", "ratio",
            "debug", "admin", "site", "db_host", "db_port"
        ]
    );
    let message = |field: &str| {
        problems
            .iter()
            .find(|problem| problem.path == field)
            .unwrap()
            .message
            .clone()
    };
    assert_eq!(message("greeting"), "letters and spaces only");
    assert_eq!(message("workers"), "must be at most 8, got 9");
    assert!(
        message("mode").contains("fast, safe"),
        "{}",
        message("mode")
    );
    assert!(
        message("timeout").contains("at most 1h"),
        "{}",
        message("timeout")
    );
    assert!(message("nonsense").contains("unknown field"));
}

#[test]
fn a_missing_required_field_without_default_is_reported() {
    let spec = Spec::parse(
        "fields:\n  token: {type: secret, required: true}\n",
        SpecFormat::Yaml,
    )
    .unwrap();
    let problems = spec.validate(&Map::new()).unwrap_err();
    assert_eq!(problems, vec![crate::Problem::new("token", "is required")]);
}

#[test]
fn cli_strings_are_coerced_to_each_type() {
    let spec = yaml_spec();
    let config = spec
        .validate(&input(json!({
            "workers": "3", "debug": "true", "hosts": "a.b,c", "ratio": "0.5",
            "timeout": "90s", "upload": "10KiB", "db_port": "5432"
        })))
        .unwrap();
    assert_eq!(config.get("workers"), Some(&json!(3)));
    assert_eq!(config.get("debug"), Some(&json!(true)));
    assert_eq!(config.get("hosts"), Some(&json!(["a.b", "c"])));
    assert_eq!(config.get("ratio"), Some(&json!(0.5)));
    assert_eq!(config.get("timeout"), Some(&json!(90)));
    assert_eq!(config.get("upload"), Some(&json!(10240)));
    assert_eq!(config.get("db_port"), Some(&json!(5432)));
}

#[test]
fn secrets_are_masked_for_display_and_kept_when_the_mask_comes_back() {
    let spec = yaml_spec();
    let first = spec
        .validate(&input(json!({"secret_key": "s3cr3t"})))
        .unwrap();
    let shown = first.masked();
    assert_eq!(shown.get("secret_key"), Some(&json!(MASK)));
    assert!(!format!("{first:?}").contains("s3cr3t"));
    // The form sends everything back, the secret still masked, one other value changed.
    let mut sent: Map<String, Value> = shown.into_iter().collect();
    sent.insert("workers".into(), json!(4));
    let second = spec.validate_update(&sent, &first).unwrap();
    assert_eq!(second.get("secret_key"), Some(&json!("s3cr3t")));
    assert_eq!(second.get("workers"), Some(&json!(4)));
    // A new value replaces the secret.
    sent.insert("secret_key".into(), json!("other"));
    assert_eq!(
        spec.validate_update(&sent, &first)
            .unwrap()
            .get("secret_key"),
        Some(&json!("other"))
    );
}

#[test]
fn rendering_reads_back_to_the_same_configuration_in_both_formats() {
    let values = json!({
        "greeting": "Hello there", "workers": 5, "secret_key": " spaced\nand \"quoted\" ",
        "hosts": ["a.b", "c"], "ratio": 0.25, "debug": true, "timeout": "1m30s",
        "motd": "line one\nline two", "admin": "a@b.io", "data": "/var/data"
    });
    let yaml = yaml_spec();
    let config = yaml.validate(&input(values.clone())).unwrap();
    let text = yaml.render(&config);
    assert!(text.contains("# What the app says"), "{text}");
    let parsed = parse_config_file(&text, ConfigFormat::Yaml).unwrap();
    assert_eq!(yaml.validate(&parsed).unwrap(), config);
    assert_eq!(
        Value::Object(parsed.clone()),
        Value::Object(config.to_input())
    );

    let ini = Spec::parse(INI_SPEC, SpecFormat::Ini).unwrap();
    let ini_config = ini
        .validate(&input(
            json!({"secret_key": " spaced\nand \"quoted\" ", "hosts": ["x,y", "z"], "workers": 7}),
        ))
        .unwrap();
    let ini_text = ini.render(&ini_config);
    assert!(ini_text.contains("[config]\n"), "{ini_text}");
    let ini_parsed = parse_config_file(&ini_text, ConfigFormat::Ini).unwrap();
    assert_eq!(ini.validate(&ini_parsed).unwrap(), ini_config);
}

#[test]
fn user_config_files_in_each_format() {
    let yaml = parse_config_file("workers: 3\ndebug: yes\n", ConfigFormat::Yaml).unwrap();
    assert_eq!(yaml.get("workers"), Some(&json!(3)));
    let ini = parse_config_file("workers = 3\n[config]\nmode = fast\n", ConfigFormat::Ini).unwrap();
    assert_eq!(ini.get("mode"), Some(&json!("fast")));
    assert!(
        parse_config_file("[other]\nx = 1\n", ConfigFormat::Ini)
            .unwrap_err()
            .to_string()
            .contains("[other]")
    );
    assert!(parse_config_file("- a\n- b\n", ConfigFormat::Yaml).is_err());
    assert_eq!(
        parse_config_file("", ConfigFormat::Yaml).unwrap(),
        Map::new()
    );
    assert_eq!(
        ConfigFormat::from_path(std::path::Path::new("x.yml")),
        Some(ConfigFormat::Yaml)
    );
}

#[test]
fn bad_specs_are_refused_naming_each_field() {
    let text = r#"
fields:
  a: {type: int, min: 5, max: 1}
  b: {type: string, colour: red}
  c: {type: int, default: "many"}
  d: {type: string, regex: "([a-z"}
  e: {type: choice}
  f: {type: widget}
  g: {type: string, min: 1}
  h: {type: string, default: "abc1", regex: "^[a-z]+$", message: letters only}
sections:
  one: [a, nope]
  two: [a]
"#;
    let Err(SpecError::Invalid(problems)) = Spec::parse(text, SpecFormat::Yaml) else {
        panic!("expected Invalid")
    };
    let paths: Vec<&str> = problems
        .iter()
        .map(|problem| problem.path.as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "a.min",
            "b.colour",
            "c.default",
            "d.regex",
            "e.choices",
            "f.type",
            "g.min",
            "h.default",
            "sections.one",
            "sections.two"
        ]
    );
    assert_eq!(problems[7].message, "letters only");
    assert!(
        problems[6]
            .message
            .contains("does not apply to a field of type string")
    );
    assert!(problems[9].message.contains("already in section \"one\""));
}

#[test]
fn bad_spec_syntax_names_the_key() {
    let error = Spec::parse("fields: {}\nextra: 1\n", SpecFormat::Yaml).unwrap_err();
    assert!(error.to_string().contains("extra"), "{error}");
    let error = Spec::parse("[a]\ntype int\n", SpecFormat::Ini).unwrap_err();
    assert!(error.to_string().contains("line 2"), "{error}");
}

#[test]
fn describe_derives_the_form_from_the_spec() {
    let description = yaml_spec().describe();
    assert_eq!(description.sections, ["advanced"]);
    let workers = description
        .fields
        .iter()
        .find(|field| field.name == "workers")
        .unwrap();
    assert_eq!(
        (workers.min.clone(), workers.max.clone()),
        (Some(json!(1)), Some(json!(8)))
    );
    assert_eq!(workers.section.as_deref(), Some("advanced"));
    let json = serde_json::to_value(&description).unwrap();
    assert_eq!(json["fields"][0]["type"], json!("string"));
    assert_eq!(json["fields"][0]["help"], json!("What the app says"));
    assert_eq!(json["fields"][3]["choices"], json!(["fast", "safe"]));
    assert_eq!(json["fields"][4]["max"], json!(3600));
}

#[test]
fn command_line_assignments_become_a_checked_configuration() {
    let input = parse_assignments(&["workers=3", "hosts=a.b,c", "greeting=Hi there"]).unwrap();
    let config = yaml_spec().validate(&input).unwrap();
    assert_eq!(config.get("workers"), Some(&json!(3)));
    assert_eq!(config.get("hosts"), Some(&json!(["a.b", "c"])));
    assert_eq!(config.get("greeting"), Some(&json!("Hi there")));
    assert!(
        parse_assignments(&["novalue"])
            .unwrap_err()
            .contains("key=value")
    );
    assert!(
        parse_assignments(&["a=1", "a=2"])
            .unwrap_err()
            .contains("twice")
    );
}
