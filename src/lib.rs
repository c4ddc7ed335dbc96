//! cachefs: a compiler cache keyed by what each compile was observed to touch.
