//! Test support: spawning the real binaries, fake OSS.
