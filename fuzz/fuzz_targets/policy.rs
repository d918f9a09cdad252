//! Policy files: every byte string must give a policy or diagnostics, never a
//! panic; accepted policies must also explain and judge any name.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A path in a directory without a lock, so only the text matters.
    let path = Path::new("/nonexistent-scriptbox-fuzz/fuzz.toml");
    if let Ok((policy, _)) = scriptbox::policy::load_text(path, text) {
        let name: pep508_rs::PackageName = "pandas".parse().unwrap();
        let _ = scriptbox::policy::explain::explain(&policy, &name);
        let _ = scriptbox::policy::verdict::judge(&policy, &name, None);
        let _ = policy.digest();
    }
});
