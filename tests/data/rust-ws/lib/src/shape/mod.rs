pub const NAME: &str = "shape/mod.rs";
