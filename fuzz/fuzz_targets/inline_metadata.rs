//! PEP 723 metadata: the input is wrapped as the body of a `# /// script`
//! block so the fuzzer spends its time in TOML and PEP 508/440 parsing; the
//! raw input is also fed as-is to exercise block detection.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut wrapped = String::with_capacity(text.len() * 2 + 32);
    wrapped.push_str("import sys\n# /// script\n");
    for line in text.lines() {
        if line.is_empty() {
            wrapped.push_str("#\n");
        } else {
            wrapped.push_str("# ");
            wrapped.push_str(line);
            wrapped.push('\n');
        }
    }
    wrapped.push_str("# ///\nprint(sys.argv)\n");
    let _ = scriptbox::validate::inline_metadata::parse_inline_metadata(&wrapped);
    let _ = scriptbox::validate::inline_metadata::parse_inline_metadata(text);
});
