use secrecy::ExposeSecret;

use super::AppKind;
use super::*;
use crate::store::events::EventKind;

fn load(mode: Mode, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::load_from(None, mode, |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
}

#[test]
fn production_without_credentials_names_both_settings() {
    let err = load(Mode::Serve, &[]).unwrap_err().to_string();
    assert!(err.contains("WXAUTH_WECHAT_APPID") && err.contains("WXAUTH_WECHAT_SECRET"), "{err}");
    let err = load(Mode::Serve, &[("WXAUTH_WECHAT_APPID", "wx1")]).unwrap_err().to_string();
    assert!(!err.contains("WXAUTH_WECHAT_APPID") && err.contains("WXAUTH_WECHAT_SECRET"), "{err}");
}

#[test]
fn dev_mode_has_defaults_for_everything() {
    let s = load(Mode::Dev, &[]).unwrap();
    assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(s.token.issuer, None);
    assert_eq!(s.token.audience, DEV_APPID);
    assert_eq!(s.token.access_token_ttl, Duration::from_secs(900));
    assert_eq!(s.token.signing_alg, SigningAlg::ES256);
    assert_eq!(s.log_format, LogFormat::Text);
}

#[test]
fn invalid_values_name_the_variable() {
    for (var, value) in [
        ("WXAUTH_LISTEN", "nope"),
        ("WXAUTH_ACCESS_TOKEN_TTL", "abc"),
        ("WXAUTH_ACCESS_TOKEN_TTL", "0"),
        ("WXAUTH_SIGNING_ALG", "HS256"),
        ("WXAUTH_WECHAT_TIMEOUT_MS", "-5"),
        ("WXAUTH_WECHAT_BASE_URL", "http://api.weixin.qq.com"),
        ("WXAUTH_ISSUER", "not a url"),
        ("WXAUTH_DATA_DIR", ""),
        ("WXAUTH_LISTEN", "0.0.0.0:8080"),
        ("WXAUTH_LISTEN", "192.0.2.7:8080"),
        ("WXAUTH_WECHAT_MAX_INFLIGHT", "0"),
        ("WXAUTH_WECHAT_BREAKER_FAILURES", "0"),
        ("WXAUTH_WECHAT_BREAKER_OPEN_SECS", "0"),
        ("WXAUTH_RATE_LIMIT_PER_MINUTE", "-1"),
        ("WXAUTH_METRICS", "yes"),
        ("WXAUTH_DOCS", "true"),
        ("WXAUTH_MAX_CONNECTIONS", "0"),
    ] {
        let err = load(Mode::Dev, &[(var, value)]).unwrap_err().to_string();
        assert!(err.contains(var), "{var}={value:?} gave: {err}");
    }
}

#[test]
fn bad_store_settings_name_the_variable_and_never_echo_a_password() {
    let pg = ("WXAUTH_STORE", "postgres");
    for (settings, var) in [
        (vec![("WXAUTH_STORE", "mysql")], "WXAUTH_STORE"),
        (vec![pg], "WXAUTH_DATABASE_URL"),
        (vec![pg, ("WXAUTH_DATABASE_URL", "  ")], "WXAUTH_DATABASE_URL"),
        (vec![pg, ("WXAUTH_DATABASE_URL", "mysql://u:hunter2@db/x")], "WXAUTH_DATABASE_URL"),
        (vec![pg, ("WXAUTH_DATABASE_URL", "hunter2 is no url")], "WXAUTH_DATABASE_URL"),
        (vec![pg, ("WXAUTH_DATABASE_URL", "postgres:///x?password=hunter2")], "WXAUTH_DATABASE_URL"),
        (vec![("WXAUTH_DATABASE_URL", "postgres://u:hunter2@db/x")], "WXAUTH_DATABASE_URL"),
        (vec![pg, ("WXAUTH_DATABASE_URL", "postgres://db/x"), ("WXAUTH_DATABASE_POOL_SIZE", "0")], "POOL_SIZE"),
        (
            vec![pg, ("WXAUTH_DATABASE_URL", "postgres://db/x"), ("WXAUTH_DATABASE_STATEMENT_TIMEOUT_MS", "5")],
            "WXAUTH_DATABASE_STATEMENT_TIMEOUT_MS",
        ),
    ] {
        let err = load(Mode::Dev, &settings).unwrap_err().to_string();
        assert!(err.contains(var), "{settings:?} gave: {err}");
        assert!(!err.contains("hunter2"), "{settings:?} echoed the password: {err}");
    }
}

#[test]
fn a_database_url_prints_without_its_password() {
    let settings = load(
        Mode::Dev,
        &[
            ("WXAUTH_STORE", "postgres"),
            ("WXAUTH_DATABASE_URL", "postgres://wx:hunter2@db.internal:5432/wxauth?sslmode=require&password=hunter3"),
            ("WXAUTH_DATABASE_POOL_SIZE", "7"),
        ],
    )
    .unwrap();
    let StoreSettings::Postgres(pg) = &settings.store else { panic!("not postgres: {:?}", settings.store) };
    assert_eq!(pg.pool_size, 7);
    assert_eq!(pg.statement_timeout, Duration::from_secs(5));
    assert!(pg.url.expose().contains("hunter2"));
    let shown = format!("{settings:?} {}", pg.url);
    assert!(!shown.contains("hunter2") && !shown.contains("hunter3"), "{shown}");
    assert!(shown.contains("postgres://wx:REDACTED@db.internal:5432/wxauth?sslmode=require"), "{shown}");
    assert!(matches!(load(Mode::Dev, &[]).unwrap().store, StoreSettings::Sled(_)), "sled is not the default");
}

#[test]
fn production_takes_plain_http_issuers_only_for_loopback_hosts() {
    let prod = |issuer: &str| {
        load(Mode::Serve, &[("WXAUTH_WECHAT_APPID", "wx1"), ("WXAUTH_WECHAT_SECRET", "s"), ("WXAUTH_ISSUER", issuer)])
    };
    for public in ["http://auth.example.com", "http://192.0.2.7:8080", "http://[2001:db8::1]/"] {
        let err = prod(public).unwrap_err().to_string();
        assert!(err.contains("WXAUTH_ISSUER") && err.contains("https://"), "{public}: {err}");
    }
    for fine in ["https://auth.example.com", "http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"] {
        assert!(prod(fine).is_ok(), "{fine} refused");
    }
    assert!(load(Mode::Dev, &[("WXAUTH_ISSUER", "http://auth.example.com")]).is_ok(), "dev mode refused it");
}

#[test]
fn dev_mode_listens_on_loopback_only_and_production_anywhere() {
    assert!(load(Mode::Dev, &[("WXAUTH_LISTEN", "[::1]:8080")]).is_ok());
    let err = load(Mode::Dev, &[("WXAUTH_LISTEN", "0.0.0.0:8080")]).unwrap_err().to_string();
    assert!(err.contains("loopback") && err.contains("--dev"), "{err}");
    let prod = [("WXAUTH_WECHAT_APPID", "wx1"), ("WXAUTH_WECHAT_SECRET", "s"), ("WXAUTH_LISTEN", "0.0.0.0:8080")];
    assert!(load(Mode::Serve, &prod).is_ok());
}

#[test]
fn reliability_settings_have_their_documented_defaults() {
    let s = load(Mode::Dev, &[]).unwrap();
    assert_eq!(s.wechat.limits.max_inflight, 2048);
    assert_eq!(s.wechat.limits.breaker_failures, 20);
    assert_eq!(s.wechat.limits.breaker_open, Duration::from_secs(5));
    assert_eq!(s.attempt_limits.requests_per_ip, 0);
    assert!(s.metrics);
    assert_eq!(s.max_connections, 10_000);
    let s = load(Mode::Dev, &[("WXAUTH_RATE_LIMIT_PER_MINUTE", "30"), ("WXAUTH_METRICS", "off")]).unwrap();
    assert_eq!((s.attempt_limits.requests_per_ip, s.metrics), (30, false));
}

#[test]
fn swagger_ui_is_on_in_dev_mode_and_off_in_production_unless_set() {
    let prod = [("WXAUTH_WECHAT_APPID", "wx1"), ("WXAUTH_WECHAT_SECRET", "s")];
    assert!(load(Mode::Dev, &[]).unwrap().docs);
    assert!(!load(Mode::Serve, &prod).unwrap().docs);
    assert!(load(Mode::Serve, &[prod[0], prod[1], ("WXAUTH_DOCS", "on")]).unwrap().docs);
    assert!(!load(Mode::Dev, &[("WXAUTH_DOCS", "off")]).unwrap().docs);
}

#[test]
fn environment_overrides_file_and_file_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wxauth.toml");
    std::fs::write(&path, "access_token_ttl = 600\nissuer = \"https://auth.example.com/\"\nsigning_alg = \"RS256\"\n")
        .unwrap();
    let s =
        Settings::load_from(Some(&path), Mode::Dev, |n| (n == "WXAUTH_SIGNING_ALG").then(|| "EdDSA".into())).unwrap();
    assert_eq!(s.token.access_token_ttl, Duration::from_secs(600));
    assert_eq!(s.token.issuer.as_deref(), Some("https://auth.example.com"));
    assert_eq!(s.token.signing_alg, SigningAlg::EdDSA);
}

#[test]
fn unknown_file_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wxauth.toml");
    std::fs::write(&path, "acess_token_ttl = 600\n").unwrap();
    let err = Settings::load_from(Some(&path), Mode::Dev, |_| None).unwrap_err().to_string();
    assert!(err.contains("acess_token_ttl"), "{err}");
}

#[test]
fn dev_mode_refuses_a_real_app_secret() {
    let err = load(Mode::Dev, &[("WXAUTH_WECHAT_SECRET", "real")]).unwrap_err().to_string();
    assert!(err.contains("WXAUTH_WECHAT_SECRET") && err.contains("--dev"), "{err}");
    assert!(load(Mode::Dev, &[("WXAUTH_WECHAT_APPID", "wxmine")]).is_ok());
}

#[test]
fn secret_does_not_print() {
    let s = load(Mode::Serve, &[("WXAUTH_WECHAT_APPID", "wx1"), ("WXAUTH_WECHAT_SECRET", "topsecret")]).unwrap();
    assert!(!format!("{s:?}").contains("topsecret"));
}

fn load_file(text: &str, mode: Mode, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wxauth.toml");
    std::fs::write(&path, text).unwrap();
    Settings::load_from(Some(&path), mode, |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
}

#[test]
fn several_apps_are_read_from_the_file_and_the_first_is_the_audience() {
    let s = load_file(
        "[[wechat_apps]]\nappid = \"wxa\"\nsecret = \"sa\"\n\n[[wechat_apps]]\nappid = \"wxb\"\nsecret = \"sb\"\n",
        Mode::Serve,
        &[],
    )
    .unwrap();
    let apps: Vec<_> = s.wechat.apps.iter().map(|a| (a.appid.as_str(), a.secret.expose_secret())).collect();
    assert_eq!(apps, [("wxa", "sa"), ("wxb", "sb")]);
    assert_eq!(s.token.audience, "wxa");
}

#[test]
fn introspection_clients_are_read_from_the_file_and_checked() {
    let secret = "s".repeat(32);
    let client =
        |id: &str, secret: &str| format!("[[introspection_clients]]\nclient_id = \"{id}\"\nsecret = \"{secret}\"\n");
    let s = load_file(
        &format!("{}{}", client("orders", &secret), client("billing", &secret)),
        Mode::Serve,
        &[("WXAUTH_WECHAT_APPID", "wx1"), ("WXAUTH_WECHAT_SECRET", "s")],
    )
    .unwrap();
    let ids: Vec<_> = s.introspection_clients.iter().map(|c| c.client_id.as_str()).collect();
    assert_eq!(ids, ["orders", "billing"]);
    assert!(!format!("{:?}", s.introspection_clients).contains(&secret), "a client secret printed");
    assert!(load(Mode::Dev, &[]).unwrap().introspection_clients.is_empty(), "none by default");
    let cases = [
        (client("orders", "short"), "at least 32"),
        (client("has space", &secret), "client_id"),
        (client("", &secret), "client_id"),
        (format!("{}{}", client("orders", &secret), client("orders", &secret)), "listed twice"),
        (
            "[[introspection_clients]]\nclient_id = \"a\"\nsecret = \"x\"\nscope = \"y\"\n".into(),
            "introspection_clients.scope",
        ),
        ("introspection_clients = \"orders\"\n".into(), "introspection_clients"),
    ];
    for (text, expected) in cases {
        let err = load_file(&text, Mode::Dev, &[]).unwrap_err().to_string();
        assert!(err.contains(expected), "{text:?}: {err}");
        assert!(!err.contains(&secret), "{err}");
    }
}

#[test]
fn webhooks_are_read_from_the_file_and_checked() {
    let secret = "w".repeat(32);
    let hook = |url: &str, secret: &str, events: &str| {
        format!("[[webhooks]]\nurl = \"{url}\"\nsecret = \"{secret}\"\n{events}")
    };
    let file = format!(
        "{}{}",
        hook("https://crm.example.com/hooks", &secret, "events = [\"login\", \"ban\", \"login\"]\n"),
        hook("http://127.0.0.1:9000/x", &secret, "")
    );
    let s = load_file(&file, Mode::Dev, &[]).unwrap();
    assert_eq!(s.webhooks.len(), 2);
    assert_eq!(s.webhooks[0].kinds, [EventKind::Login, EventKind::Ban]);
    assert!(s.webhooks[1].kinds.is_empty(), "no events: every kind");
    assert!(!format!("{:?}", s.webhooks).contains(&secret), "a webhook secret printed");
    assert!(load(Mode::Dev, &[]).unwrap().webhooks.is_empty(), "none by default");
    let cases = [
        (hook("http://crm.example.com/hooks", &secret, ""), "https://"),
        (hook("ftp://127.0.0.1/x", &secret, ""), "https://"),
        (hook("https://user:pw@crm.example.com/", &secret, ""), "credentials"),
        (hook("not a url", &secret, ""), "not a URL"),
        (hook("https://crm.example.com/", "short", ""), "at least 32"),
        (hook("https://crm.example.com/", &secret, "events = [\"logins\"]\n"), "unknown event kind \"logins\""),
        (hook("https://crm.example.com/", &secret, "events = \"login\"\n"), "webhooks"),
        (hook("https://crm.example.com/", &secret, "name = \"crm\"\n"), "webhooks.name"),
        (format!("{0}{0}", hook("https://crm.example.com/", &secret, "")), "listed twice"),
    ];
    for (text, expected) in cases {
        let err = load_file(&text, Mode::Dev, &[]).unwrap_err().to_string();
        assert!(err.contains(expected), "{text:?}: {err}");
        assert!(!err.contains(&secret), "{err}");
    }
}

#[test]
fn a_default_role_is_set_per_app_or_for_the_one_app_and_checked() {
    let file = "[[wechat_apps]]\nappid = \"wxa\"\nsecret = \"sa\"\ndefault_role = \"member\"\n\n\
                [[wechat_apps]]\nappid = \"wxb\"\nsecret = \"sb\"\n";
    let s = load_file(file, Mode::Serve, &[]).unwrap();
    let roles: Vec<_> = s.wechat.apps.iter().map(|a| a.default_role.as_deref()).collect();
    assert_eq!(roles, [Some("member"), None]);
    let one = load(Mode::Dev, &[("WXAUTH_WECHAT_DEFAULT_ROLE", "shop:1")]).unwrap();
    assert_eq!(one.wechat.apps[0].default_role.as_deref(), Some("shop:1"));
    assert_eq!(load(Mode::Dev, &[]).unwrap().wechat.apps[0].default_role, None);
    let err = load(Mode::Dev, &[("WXAUTH_WECHAT_DEFAULT_ROLE", "not a role")]).unwrap_err().to_string();
    assert!(err.contains("WXAUTH_WECHAT_DEFAULT_ROLE") && err.contains("role"), "{err}");
}

#[test]
fn bad_app_lists_are_refused_with_the_reason() {
    let two = "[[wechat_apps]]\nappid = \"wxa\"\nsecret = \"s\"\n";
    for (text, vars, expected) in [
        (format!("{two}{two}"), &[][..], "listed twice"),
        ("[[wechat_apps]]\nappid = \"wxa\"\n".to_string(), &[][..], "no secret"),
        ("[[wechat_apps]]\nappid = \"wx-a\"\nsecret = \"s\"\n".to_string(), &[][..], "app 1"),
        ("[[wechat_apps]]\nappid = \"wxa\"\nsecret = \"s\"\nname = \"x\"\n".to_string(), &[][..], "wechat_apps.name"),
        ("wechat_apps = \"wxa\"\n".to_string(), &[][..], "wechat_apps"),
        (two.to_string(), &[("WXAUTH_WECHAT_APPID", "wxc")][..], "WXAUTH_WECHAT_APPID"),
        (two.to_string(), &[("WXAUTH_WECHAT_DEFAULT_ROLE", "member")][..], "WXAUTH_WECHAT_DEFAULT_ROLE"),
        (format!("{two}default_role = \"a b\"\n"), &[][..], "app 1 (wxa): default_role"),
    ] {
        let err = load_file(&text, Mode::Serve, vars).unwrap_err().to_string();
        assert!(err.contains(expected), "{text:?}: {err}");
    }
    let err = load_file(two, Mode::Dev, &[]).unwrap_err().to_string();
    assert!(err.contains("--dev"), "{err}");
}

#[test]
fn every_surface_is_an_app_kind_and_browser_apps_list_where_they_may_return() {
    let file = "[[wechat_apps]]\nappid = \"wxa\"\nsecret = \"s\"\n\n\
                [[wechat_apps]]\nappid = \"wxb\"\nsecret = \"s\"\nkind = \"official_account\"\n\
                redirect_uris = [\"https://shop.example.com/wx/cb\", \"http://127.0.0.1:3000/cb\"]\n\n\
                [[wechat_apps]]\nappid = \"wxc\"\nsecret = \"s\"\nkind = \"website\"\nredirect_uris = [\"https://shop.example.com/login\"]\n\n\
                [[wechat_apps]]\nappid = \"wxd\"\nsecret = \"s\"\nkind = \"mobile_app\"\n";
    let s = load_file(file, Mode::Serve, &[]).unwrap();
    let kinds: Vec<AppKind> = s.wechat.apps.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, AppKind::ALL.to_vec(), "a missing kind is a mini-program, so today's files keep working");
    assert_eq!(s.wechat.apps[1].redirect_uris, ["https://shop.example.com/wx/cb", "http://127.0.0.1:3000/cb"]);
    assert_eq!(s.wechat.open_url.as_str(), "https://open.weixin.qq.com/");
    let proxied = load_file(file, Mode::Serve, &[("WXAUTH_WECHAT_OPEN_URL", "https://proxy.example.com/wechat")]);
    assert_eq!(proxied.unwrap().wechat.open_url.as_str(), "https://proxy.example.com/wechat/", "the prefix was lost");
}

#[test]
fn bad_app_kinds_and_redirect_uris_are_refused_naming_the_app() {
    let app = "[[wechat_apps]]\nappid = \"wxa\"\nsecret = \"s\"\n";
    for (extra, expected) in [
        (
            "kind = \"web\"\n",
            "app 1 (wxa): kind \"web\" is not one of miniprogram, official_account, website, mobile_app",
        ),
        ("kind = \"website\"\n", "app 1 (wxa): kind website needs redirect_uris"),
        ("kind = \"official_account\"\nredirect_uris = []\n", "kind official_account needs redirect_uris"),
        (
            "redirect_uris = [\"https://a.example.com/cb\"]\n",
            "redirect_uris is only for official_account and website apps, not miniprogram",
        ),
        ("kind = \"mobile_app\"\nredirect_uris = [\"https://a.example.com/cb\"]\n", "not mobile_app"),
        ("kind = \"website\"\nredirect_uris = [\"http://a.example.com/cb\"]\n", "must be https://"),
        ("kind = \"website\"\nredirect_uris = [\"https://a.example.com/cb#x\"]\n", "must not have a fragment"),
        ("kind = \"website\"\nredirect_uris = [\"/cb\"]\n", "is not an absolute URL"),
    ] {
        let err = load_file(&format!("{app}{extra}"), Mode::Serve, &[]).unwrap_err().to_string();
        assert!(err.contains(expected) && err.contains("wechat_apps"), "{extra:?}: {err}");
    }
    let prod = [("WXAUTH_WECHAT_APPID", "wx1"), ("WXAUTH_WECHAT_SECRET", "s")];
    for bad in ["http://open.example.com", "ftp://x", "https://open.example.com/?a=1"] {
        let err = load(Mode::Serve, &[prod[0], prod[1], ("WXAUTH_WECHAT_OPEN_URL", bad)]).unwrap_err().to_string();
        assert!(err.contains("WXAUTH_WECHAT_OPEN_URL"), "{bad}: {err}");
    }
}

#[test]
fn the_admin_api_is_off_by_default_and_listens_on_loopback_only() {
    let prod = [("WXAUTH_WECHAT_APPID", "wx1"), ("WXAUTH_WECHAT_SECRET", "s")];
    assert_eq!(load(Mode::Serve, &prod).unwrap().admin_listen, None);
    for (value, expected) in [("", None), ("127.0.0.1:8081", Some("127.0.0.1:8081")), ("[::1]:0", Some("[::1]:0"))] {
        let vars = [prod[0], prod[1], ("WXAUTH_ADMIN_LISTEN", value)];
        let listen = load(Mode::Serve, &vars).unwrap().admin_listen;
        assert_eq!(listen, expected.map(|a| a.parse().unwrap()), "{value:?}");
    }
    for (value, expected) in [
        ("0.0.0.0:8081", "loopback only"),
        ("192.0.2.7:8081", "TLS proxy"),
        ("[::]:8081", "loopback only"),
        ("localhost:8081", "HOST:PORT"),
        ("8081", "HOST:PORT"),
    ] {
        let vars = [prod[0], prod[1], ("WXAUTH_ADMIN_LISTEN", value)];
        let err = load(Mode::Serve, &vars).unwrap_err().to_string();
        assert!(err.contains("WXAUTH_ADMIN_LISTEN") && err.contains(expected), "{value:?}: {err}");
    }
}

#[test]
fn registration_limits_and_admin_socket_have_defaults_and_are_checked() {
    let s = load(Mode::Dev, &[]).unwrap();
    assert_eq!(s.registration, Registration::Auto);
    assert_eq!(
        s.attempt_limits,
        AttemptLimits {
            requests_per_ip: 0,
            per_username: 5,
            per_ip: 20,
            refresh_per_family: 10,
            refresh_per_ip: 600,
            trusted_proxies: Vec::new()
        }
    );
    assert_eq!(s.admin_socket, PathBuf::from("./data/admin.sock"));
    assert_eq!(s.token.refresh_families_per_user, 20);
    let s = load(Mode::Dev, &[("WXAUTH_REFRESH_FAMILIES_PER_USER", "1"), ("WXAUTH_REFRESH_ATTEMPTS_PER_IP", "0")]);
    let s = s.unwrap();
    assert_eq!((s.token.refresh_families_per_user, s.attempt_limits.refresh_per_ip), (1, 0));
    let s = load(Mode::Dev, &[("WXAUTH_REGISTRATION", "bind"), ("WXAUTH_BIND_ATTEMPTS_PER_IP", "0")]).unwrap();
    assert_eq!((s.registration, s.attempt_limits.per_ip), (Registration::Bind, 0));
    let s = load(Mode::Dev, &[("WXAUTH_TRUSTED_PROXIES", "10.0.0.0/8, ::1")]).unwrap();
    assert_eq!(s.attempt_limits.trusted_proxies, ["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
    for (var, value) in [
        ("WXAUTH_REGISTRATION", "manual"),
        ("WXAUTH_BIND_ATTEMPTS_PER_USERNAME", "-1"),
        ("WXAUTH_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("WXAUTH_BIND_TICKET_TTL", "301"),
        ("WXAUTH_REFRESH_FAMILIES_PER_USER", "0"),
        ("WXAUTH_REFRESH_FAMILIES_PER_USER", "1001"),
        ("WXAUTH_REFRESH_ATTEMPTS_PER_FAMILY", "-1"),
        ("WXAUTH_REFRESH_ATTEMPTS_PER_IP", "many"),
    ] {
        let err = load(Mode::Dev, &[(var, value)]).unwrap_err().to_string();
        assert!(err.contains(var), "{var}={value:?} gave: {err}");
    }
}

mod url_tests {
    use super::super::urls::*;

    #[test]
    fn the_wechat_base_url_is_https_and_plain_http_only_on_this_machine() {
        // The AppSecret travels in its query string.
        for accepted in [
            "https://api.weixin.qq.com",
            "https://10.1.2.3:8443",
            "http://127.0.0.1:9",
            "http://127.8.9.10",
            "http://localhost:8080",
            "http://[::1]:9",
        ] {
            assert!(parse_base_url(accepted).is_ok(), "{accepted} was refused");
        }
        for refused in [
            "http://api.weixin.qq.com",
            "http://10.1.2.3",
            "http://localhost.example.com",
            "http://[::2]",
            "ftp://127.0.0.1",
            "https://api.weixin.qq.com/?appid=x",
            "https://api.weixin.qq.com/#x",
        ] {
            let err = parse_base_url(refused).err().map(|e| e.to_string());
            assert!(err.as_deref().is_some_and(|e| e.contains("wechat_base_url")), "{refused}: {err:?}");
        }
    }

    #[test]
    fn the_issuer_is_an_http_or_https_url_without_query_or_fragment() {
        assert_eq!(parse_issuer("https://auth.example.com/", false).unwrap(), "https://auth.example.com");
        assert_eq!(parse_issuer("http://127.0.0.1:8080", false).unwrap(), "http://127.0.0.1:8080");
        for refused in
            ["ftp://auth.example.com", "urn:wxauth", "https://auth.example.com/?a=b", "https://auth.example.com/#top"]
        {
            let err = parse_issuer(refused, false).err().map(|e| e.to_string());
            assert!(err.as_deref().is_some_and(|e| e.contains("issuer")), "{refused}: {err:?}");
        }
    }
}

mod catalog_tests {
    use super::super::{Mode, catalog, load::Layers};

    fn layers(vars: &[(&str, &str)]) -> Layers {
        Layers::load(None, |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())).unwrap()
    }

    #[test]
    fn every_declared_setting_is_read_by_the_loader() {
        let sled = layers(&[]);
        super::super::Settings::validate(&sled, Mode::Dev).unwrap();
        let postgres = layers(&[("WXAUTH_STORE", "postgres"), ("WXAUTH_DATABASE_URL", "postgres://db/x")]);
        super::super::Settings::validate(&postgres, Mode::Dev).unwrap();
        let read: Vec<&str> = sled.read().union(&postgres.read()).copied().collect();
        let declared: Vec<&str> = catalog::ALL.iter().map(|s| s.key).collect();
        let unread: Vec<&&str> = declared.iter().filter(|k| !read.contains(k)).collect();
        assert!(unread.is_empty(), "declared but never read: {unread:?}");
    }

    #[test]
    fn keys_are_distinct_and_whole_numbers_have_a_default_in_range_that_the_docs_state() {
        for (i, setting) in catalog::ALL.iter().enumerate() {
            assert!(!catalog::ALL[..i].iter().any(|s| s.key == setting.key), "{} declared twice", setting.key);
            let Some(range) = setting.range else { continue };
            let catalog::Default::Value(default) = setting.default else {
                panic!("{} is a number without a default value", setting.key)
            };
            let default: u64 = default.parse().unwrap_or_else(|_| panic!("{}: default {default:?}", setting.key));
            assert!((range.min..=range.max).contains(&default), "{}: default {default} out of range", setting.key);
            let stated = format!("{} to {}", range.min, range.max);
            assert!(setting.doc.contains(&stated), "{}: the doc does not say `{stated}`", setting.key);
        }
    }
}

mod docs_tests {
    use super::super::catalog;

    const BEGIN: &str = "<!-- settings table: generated from src/config/catalog.rs; refresh with UPDATE_DOCS=1 cargo test --lib config -->\n";
    const END: &str = "<!-- end of settings table -->\n";

    /// The table is the catalog's, so that a setting cannot be added undocumented, nor a
    /// default changed in one place only. `UPDATE_DOCS=1` writes it.
    #[test]
    fn the_configuration_page_shows_the_catalogs_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let page = std::fs::read_to_string(&path).unwrap();
        let start = page.find(BEGIN).expect("docs/configuration.md lost its table's start marker") + BEGIN.len();
        let end = start + page[start..].find(END).expect("docs/configuration.md lost its table's end marker");
        let generated = catalog::markdown_table();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, format!("{}{generated}{}", &page[..start], &page[end..])).unwrap();
            return;
        }
        assert!(
            page[start..end] == generated,
            "docs/configuration.md's settings table differs from src/config/catalog.rs: \
             run UPDATE_DOCS=1 cargo test --lib config, and review the diff"
        );
    }
}
