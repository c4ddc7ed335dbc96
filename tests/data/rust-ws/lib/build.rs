fn main() {
    println!("cargo:rerun-if-changed=csrc/mul.c");
    cc::Build::new().file("csrc/mul.c").compile("wsmul");
}
