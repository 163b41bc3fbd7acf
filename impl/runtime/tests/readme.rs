//! The README's library example is the compiled `examples/echo.rs`, word for
//! word, so the README never shows code that does not build.

#[test]
fn readme_echo_example_is_the_compiled_one() {
    let readme = include_str!("../../../README.md");
    let example = include_str!("../examples/echo.rs");
    let start = readme
        .find("```rust,no_run\n")
        .expect("the README has the library example")
        + "```rust,no_run\n".len();
    let end = start + readme[start..].find("```").expect("closed code block");
    let shown = &readme[start..end];
    let code: String = example
        .lines()
        .skip_while(|l| l.starts_with("//!") || l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        shown, code,
        "README.md's example and examples/echo.rs differ"
    );
}
