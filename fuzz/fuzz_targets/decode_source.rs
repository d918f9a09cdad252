//! PEP 263 decoding (BOM, coding cookie, NUL bytes), then the nesting guard
//! and import scan exactly as `validate_source` runs them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ruff_python_ast::PythonVersion;
use scriptbox::validate::imports::scan_source;
use scriptbox::validate::nesting::check_nesting;
use scriptbox::validate::stack::with_large_stack;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = scriptbox::validate::source::decode_source(data) else {
        return;
    };
    let s = s.as_str();
    let _ = with_large_stack(|| check_nesting(s).map(|()| scan_source(s, PythonVersion::PY311)));
});
