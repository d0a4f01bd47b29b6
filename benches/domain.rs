fn main() {} // placeholder: being built
