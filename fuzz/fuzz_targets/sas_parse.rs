//! Parses arbitrary text as a SAS token and exercises every accessor of a parsed token: none
//! may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twinhub_core::sas::SasToken;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = SasToken::parse(text) {
        if let Ok(resource) = token.resource() {
            let _ = resource.covers("hub.example", &["devices", "d1"]);
        }
        let _ = token.key_name();
        let _ = token.expiry();
        let _ = token.verify("AAAA");
        let _ = token.is_expired(0, 0);
    }
});
