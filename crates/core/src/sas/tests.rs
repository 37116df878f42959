use proptest::prelude::*;

use super::*;

/// Base64 of the bytes 0..32; the expected signatures below were computed with Python's `hmac`.
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const OTHER_KEY: &str = "H/7+/fz7+vn49/b19PPy8fDv7u3s6+rp6Ofm5eTj4uE=";
const HOST: &str = "myhub.azure-devices.net";

fn parse(token: &str) -> SasToken<'_> {
    SasToken::parse(token).unwrap_or_else(|e| panic!("{token:?}: {e}"))
}

#[test]
fn python_device_token_verifies() {
    // urllib.parse.quote(uri, safe="") for sr and sig: uppercase hex.
    let token = parse(
        "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdevice1\
         &sig=gFSfLGMXDOvf906%2FiaX3KwzLLNFHgaFZyCbsGjxtd1Y%3D&se=1700000000",
    );
    assert!(token.verify(KEY));
    assert!(!token.verify(OTHER_KEY));
    assert_eq!(token.expiry(), 1_700_000_000);
    assert_eq!(token.key_name(), None);
    assert_eq!(
        token.resource(),
        Ok(ResourceUri {
            host: HOST.to_owned(),
            segments: vec!["devices".to_owned(), "device1".to_owned()],
        })
    );
}

#[test]
fn python_service_token_with_unencoded_slash_verifies() {
    // sr = quote_plus(host), sig = quote(sig): '/' left as is, '+' and '=' encoded; skn last.
    let token = parse(
        "SharedAccessSignature sr=myhub.azure-devices.net\
         &sig=ZqCXffv78J2V%2B9nT/gqwU73DIWE5k%2BYZPhFFXyxaIFY%3D&se=1700000003&skn=iothubowner",
    );
    assert!(token.verify(KEY));
    assert_eq!(token.key_name(), Some("iothubowner"));
    let resource = token.resource().unwrap();
    assert_eq!(resource.host, HOST);
    assert!(resource.segments.is_empty());
}

#[test]
fn c_token_with_lowercase_hex_verifies() {
    let token = parse(
        "SharedAccessSignature sr=myhub.azure-devices.net%2fdevices%2fdevice1\
         &sig=iIyvul1z7xsjQDMXvGvUxZi%2blqnXkFn5lOgyNrICYDM%3d&se=1700000000",
    );
    assert!(token.verify(KEY));
    assert_eq!(token.resource().unwrap().segments, ["devices", "device1"]);
}

#[test]
fn node_style_generated_token_matches_the_sdk_encoding() {
    let uri = "myhub.azure-devices.net/devices/dev(1)!/modules/m'*";
    let token = generate_token(uri, KEY, None, 1_700_000_000).unwrap();
    assert_eq!(
        token,
        "SharedAccessSignature \
         sr=myhub.azure-devices.net%2Fdevices%2Fdev%281%29%21%2Fmodules%2Fm%27%2A\
         &sig=ml0QAHI6RUjTFIkw%2BS4FtBj3ePE3E6x1C7W32ipWBwc%3D&se=1700000000"
    );
    let parsed = parse(&token);
    assert!(parsed.verify(KEY));
    assert!(parsed.resource().unwrap().covers(
        "MyHub.Azure-Devices.NET",
        &["devices", "dev(1)!", "modules", "m'*"]
    ));
}

#[test]
fn node_field_order_and_policy_name_verify() {
    let token = generate_token(HOST, KEY, Some("registry Read/Write"), 1_700_000_000).unwrap();
    assert!(token.ends_with("&se=1700000000&skn=registry%20Read%2FWrite"));
    // Node's service client sends sr, sig, skn, se.
    let (front, skn) = token.rsplit_once("&skn=").unwrap();
    let (front, se) = front.rsplit_once("&se=").unwrap();
    let reordered = format!("{front}&skn={skn}&se={se}");
    let parsed = parse(&reordered);
    assert!(parsed.verify(KEY));
    assert_eq!(parsed.key_name(), Some("registry Read/Write"));
}

#[test]
fn sign_matches_python_hmac() {
    assert_eq!(
        sign(KEY, "myhub.azure-devices.net\n1700000000").as_deref(),
        Ok("iIzEw6hi6GK79RY5jNXO6QeQkSL/Ax4zTmy44X2G1VY=")
    );
    assert_eq!(sign("not base64!", "x"), Err(SasError::InvalidKey));
}

#[test]
fn tampered_fields_do_not_verify() {
    let token = generate_token(
        "myhub.azure-devices.net/devices/d1",
        KEY,
        None,
        1_700_000_000,
    )
    .unwrap();
    let later_expiry = token.replace("se=1700000000", "se=1800000000");
    assert!(!parse(&later_expiry).verify(KEY));
    let other_device = token.replace("%2Fd1&", "%2Fd2&");
    assert!(!parse(&other_device).verify(KEY));
    // Re-encoding sr changes the signed bytes even though it decodes to the same URI.
    let reencoded = token.replace("%2Fdevices%2Fd1", "%2fdevices%2fd1");
    assert!(!parse(&reencoded).verify(KEY));
    assert!(!parse(&token).verify("not base64!"));
}

#[test]
fn expiry_and_skew() {
    let token = generate_token(HOST, KEY, None, 1000).unwrap();
    let token = parse(&token);
    assert!(!token.is_expired(999, 0));
    assert!(token.is_expired(1000, 0));
    assert!(!token.is_expired(1299, 300));
    assert!(token.is_expired(1300, 300));
    let far = generate_token(HOST, KEY, None, u64::MAX).unwrap();
    assert!(!parse(&far).is_expired(u64::MAX - 1, u64::MAX));
}

#[test]
fn malformed_tokens_are_rejected() {
    let sig = "gFSfLGMXDOvf906%2FiaX3KwzLLNFHgaFZyCbsGjxtd1Y%3D";
    let cases = [
        (String::new(), SasError::MissingPrefix),
        (
            format!("sharedaccesssignature sr=h&sig={sig}&se=1"),
            SasError::MissingPrefix,
        ),
        (
            format!("SharedAccessSignature  sr=h&sig={sig}&se=1"),
            SasError::UnknownField {
                name: " sr".to_owned(),
            },
        ),
        (
            "SharedAccessSignature ".to_owned(),
            SasError::MalformedField,
        ),
        (
            format!("SharedAccessSignature sr=h&sig={sig}&se=1&"),
            SasError::MalformedField,
        ),
        (
            format!("SharedAccessSignature sr=h&sig={sig}&se"),
            SasError::MalformedField,
        ),
        (
            format!("SharedAccessSignature sr=h&sig={sig}"),
            SasError::MissingField { name: "se" },
        ),
        (
            "SharedAccessSignature sr=h&se=1".to_owned(),
            SasError::MissingField { name: "sig" },
        ),
        (
            format!("SharedAccessSignature sig={sig}&se=1"),
            SasError::MissingField { name: "sr" },
        ),
        (
            format!("SharedAccessSignature sr=h&sr=h&sig={sig}&se=1"),
            SasError::DuplicateField { name: "sr" },
        ),
        (
            format!("SharedAccessSignature sr=h&sig={sig}&se=1&se=2"),
            SasError::DuplicateField { name: "se" },
        ),
        (
            format!("SharedAccessSignature sr=h&sig={sig}&se=1&skn=a&skn=b"),
            SasError::DuplicateField { name: "skn" },
        ),
        (
            format!("SharedAccessSignature sr=h&sig={sig}&se=1&x=1"),
            SasError::UnknownField {
                name: "x".to_owned(),
            },
        ),
        (
            format!("SharedAccessSignature SR=h&sig={sig}&se=1"),
            SasError::UnknownField {
                name: "SR".to_owned(),
            },
        ),
        (
            format!("SharedAccessSignature sr=&sig={sig}&se=1"),
            SasError::EmptyField { name: "sr" },
        ),
        (
            format!("SharedAccessSignature sr=h&sig={sig}&se=1&skn="),
            SasError::EmptyField { name: "skn" },
        ),
        (
            format!("SharedAccessSignature sr=h&sig={sig}&se=+1"),
            SasError::InvalidExpiry,
        ),
        (
            format!("SharedAccessSignature sr=h&sig={sig}&se=-1"),
            SasError::InvalidExpiry,
        ),
        (
            format!("SharedAccessSignature sr=h&sig={sig}&se=1.5"),
            SasError::InvalidExpiry,
        ),
        (
            format!("SharedAccessSignature sr=h&sig={sig}&se=18446744073709551616"),
            SasError::InvalidExpiry,
        ),
        (
            "SharedAccessSignature sr=h&sig=abc%&se=1".to_owned(),
            SasError::InvalidSignature,
        ),
        (
            "SharedAccessSignature sr=h&sig=AAAA&se=1".to_owned(),
            SasError::InvalidSignature,
        ),
        (
            "SharedAccessSignature sr=h&sig=gFSfLGMXDOvf906%2FiaX3KwzLLNFHgaFZyCbsGjxtd1Y&se=1"
                .to_owned(),
            SasError::InvalidSignature,
        ),
        (
            format!("SharedAccessSignature sr=h&sig={sig}&se=1&skn=%FF"),
            SasError::InvalidKeyName,
        ),
    ];
    for (token, expected) in cases {
        assert_eq!(SasToken::parse(&token).err(), Some(expected), "{token:?}");
    }
}

#[test]
fn plus_in_signature_is_not_a_space() {
    let token = generate_token(HOST, KEY, None, 1_700_000_003).unwrap();
    assert!(token.contains("%2B"));
    let literal_plus = token
        .replace("%2B", "+")
        .replace("%2F", "/")
        .replace("%3D", "=");
    assert!(parse(&literal_plus).verify(KEY));
}

#[test]
fn resource_parsing() {
    let resource = |sr: &str| {
        let token = format!(
            "SharedAccessSignature sr={sr}&sig=gFSfLGMXDOvf906%2FiaX3KwzLLNFHgaFZyCbsGjxtd1Y%3D&se=1"
        );
        SasToken::parse(&token).unwrap().resource()
    };
    let expected = Ok(ResourceUri {
        host: HOST.to_owned(),
        segments: vec!["devices".to_owned(), "d1".to_owned()],
    });
    assert_eq!(resource("myhub.azure-devices.net/devices/d1"), expected);
    assert_eq!(
        resource("HTTPS%3A%2F%2Fmyhub.azure-devices.net%2Fdevices%2Fd1%2F"),
        expected
    );
    assert_eq!(
        resource("https://myhub.azure-devices.net/devices/d1"),
        expected
    );
    assert_eq!(resource("%2Fdevices"), Err(SasError::InvalidResource));
    assert_eq!(resource("h%2F%2Fdevices"), Err(SasError::InvalidResource));
    assert_eq!(resource("h%2Fd%C3"), Err(SasError::InvalidResource));
    assert_eq!(resource("https%3A%2F%2F"), Err(SasError::InvalidResource));
}

#[test]
fn scope_is_a_prefix_by_segment() {
    let scope = |segments: &[&str]| ResourceUri {
        host: HOST.to_owned(),
        segments: segments.iter().map(|s| (*s).to_owned()).collect(),
    };
    let hub = scope(&[]);
    assert!(hub.covers(HOST, &[]));
    assert!(hub.covers(HOST, &["devices", "d1"]));
    assert!(!hub.covers("otherhub.azure-devices.net", &["devices", "d1"]));

    let devices = scope(&["devices"]);
    assert!(devices.covers(HOST, &["devices", "d1"]));
    assert!(!devices.covers(HOST, &["modules"]));

    let device = scope(&["devices", "d1"]);
    assert!(device.covers("MYHUB.azure-devices.net", &["devices", "d1"]));
    assert!(device.covers(HOST, &["devices", "d1", "modules", "m"]));
    assert!(!device.covers(HOST, &["devices", "d10"]));
    assert!(!device.covers(HOST, &["devices", "D1"]));
    assert!(!device.covers(HOST, &["devices"]));
}

#[test]
fn debug_and_errors_never_show_the_signature() {
    let token = generate_token(HOST, KEY, Some("service"), 1_700_000_000).unwrap();
    let shown = format!("{:?}", parse(&token));
    assert!(shown.contains("<redacted>"));
    let signature = sign(KEY, "myhub.azure-devices.net\n1700000000").unwrap();
    assert!(!shown.contains(&signature[..20]));
    let bad = format!("{token}&sig2=secret");
    let error = SasToken::parse(&bad).unwrap_err().to_string();
    assert_eq!(error, "the token has an unknown field \"sig2\"");
}

#[test]
fn generate_token_rejects_what_could_not_be_parsed_back() {
    assert_eq!(
        generate_token("", KEY, None, 1),
        Err(SasError::EmptyField { name: "sr" })
    );
    assert_eq!(
        generate_token(HOST, KEY, Some(""), 1),
        Err(SasError::EmptyField { name: "skn" })
    );
    assert_eq!(
        generate_token(HOST, "%%%", None, 1),
        Err(SasError::InvalidKey)
    );
}

proptest! {
    #[test]
    fn parse_never_panics(input in "\\PC{0,120}") {
        if let Ok(token) = SasToken::parse(&input) {
            prop_assert!(input.starts_with(PREFIX));
            prop_assert!(!token.verify(KEY));
        }
    }

    #[test]
    fn parse_never_panics_on_token_shaped_input(
        fields in prop::collection::vec("(sr|sig|se|skn|x)?=?[A-Za-z0-9%+/=.:-]{0,24}", 0..6)
    ) {
        let input = format!("{PREFIX}{}", fields.join("&"));
        if let Ok(token) = SasToken::parse(&input) {
            let resource = token.resource();
            prop_assert!(resource.is_err() || resource.is_ok_and(|r| !r.host.is_empty()));
            prop_assert!(!token.is_expired(0, 0) || token.expiry() == 0);
        }
    }

    #[test]
    fn generated_tokens_round_trip(
        host in "[a-z0-9.-]{1,20}",
        segments in prop::collection::vec("[A-Za-z0-9:.+%_#*?!(),=@;$'-]{1,12}", 0..4),
        key_name in prop::option::of("\\PC{1,12}"),
        expiry in any::<u64>(),
    ) {
        let uri = std::iter::once(host.as_str())
            .chain(segments.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("/");
        let token = generate_token(&uri, KEY, key_name.as_deref(), expiry).unwrap();
        let parsed = SasToken::parse(&token).unwrap();
        prop_assert!(parsed.verify(KEY));
        prop_assert!(!parsed.verify(OTHER_KEY));
        prop_assert_eq!(parsed.expiry(), expiry);
        prop_assert_eq!(parsed.key_name(), key_name.as_deref());
        let resource = parsed.resource().unwrap();
        prop_assert_eq!(&resource.host, &host);
        prop_assert_eq!(&resource.segments, &segments);
        let targets: Vec<&str> = segments.iter().map(String::as_str).collect();
        prop_assert!(resource.covers(&host.to_uppercase(), &targets));
    }
}
