pub fn all() -> Vec<crate::spec::Test> {
    Vec::new()
}
