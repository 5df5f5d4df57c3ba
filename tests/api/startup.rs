//! Start-up rules checked in process: what `Application::build` refuses, and what it infers.

use wxauth::{
    config::{Mode, Settings},
    domain::{KeyMode, SigningAlg},
    startup::{Application, StartupError},
    token::Activation,
};

use crate::helpers::{MockWechat, base_vars};

#[tokio::test]
async fn production_on_all_interfaces_needs_an_issuer() {
    // 0.0.0.0 is no address a verifier can fetch keys from, so it cannot be the default.
    let wechat = MockWechat::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut vars = base_vars(dir.path(), &wechat);
    vars.insert("WXAUTH_LISTEN".into(), "0.0.0.0:0".into());
    wxauth::token::rotate(&dir.path().join("keys"), SigningAlg::ES256, KeyMode::Production, Activation::Now).unwrap();
    let build = |vars: &std::collections::HashMap<String, String>| {
        let settings = Settings::load_from(None, Mode::Serve, |name| vars.get(name).cloned()).unwrap();
        Application::build(settings)
    };

    let refused = build(&vars).await.err().expect("started on 0.0.0.0 without an issuer");
    assert!(matches!(refused, StartupError::IssuerRequired(_)), "{refused}");
    assert!(refused.to_string().contains("WXAUTH_ISSUER"), "{refused}");

    vars.insert("WXAUTH_ISSUER".into(), "https://auth.example.com".into());
    let app = build(&vars).await.unwrap();
    assert!(app.addr().ip().is_unspecified());
    assert_eq!(app.auth().tokens().issuer(), "https://auth.example.com");
}
