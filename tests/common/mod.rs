//! Test support shared by several integration-test files: the generic conformance suite
//! (DESIGN.md section 3, as a macro over any `TokenStore`) and the model check used by the
//! property tests.
//!
//! Each test file includes this module with `#[macro_use] mod common;` and uses only part
//! of it, hence the blanket `dead_code` allowance.
#![allow(dead_code)]

#[macro_use]
pub mod conformance;
pub mod model;
