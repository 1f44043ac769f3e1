//! Golden and property tests of the injector.
