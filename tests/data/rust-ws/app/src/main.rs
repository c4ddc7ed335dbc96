fn main() {
    println!(
        "mul={} answer={} lib={} shape={} greeting={}",
        ws_lib::mul(6, 7),
        ws_macros::answer!(),
        ws_lib::VERSION,
        ws_lib::shape_name(),
        ws_lib::GREETING
    );
}
