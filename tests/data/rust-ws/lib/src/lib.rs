mod shape;

extern "C" {
    fn ws_mul(a: i32, b: i32) -> i32;
}

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GREETING: &str = include_str!("greeting.txt");

pub fn mul(a: i32, b: i32) -> i32 {
    unsafe { ws_mul(a, b) }
}

pub fn shape_name() -> &'static str {
    shape::NAME
}

// Never used: rustc warns, and the warning must show again on a hit.
fn unused_helper() {}
