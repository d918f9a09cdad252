//! Whole validation pipeline as the product runs it: PEP 263 decoding, the
//! nesting guard + ruff parse on a large stack, import resolution, PEP 723
//! metadata, and report rendering.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use scriptbox::validate::target::TargetPython;

static TARGET: LazyLock<TargetPython> =
    LazyLock::new(|| TargetPython::bare("3.11").expect("bare 3.11 target"));

fuzz_target!(|data: &[u8]| {
    let Ok(source) = scriptbox::validate::source::decode_source(data) else {
        return;
    };
    let path = Path::new("fuzz.py");
    match scriptbox::validate::validate_source(path, &source, &TARGET, None) {
        Ok(report) => {
            let _ = report.verdict();
            let _ = report.pip_command();
            let _ = scriptbox::validate::report::to_json(&report);
            let _ = scriptbox::validate::report::to_text(&report);
        }
        Err(e) => {
            let _ = scriptbox::validate::report::error_line(path, &e);
        }
    }
});
