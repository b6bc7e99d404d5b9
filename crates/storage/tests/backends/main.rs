//! Every backend against the conformance suite, the network ones against
//! real servers the tests start on 127.0.0.1 (an S3 server inside this
//! process, OpenSSH's sshd and Apache's mod_dav as child processes). A
//! missing server binary fails the test with the package to install.

mod decorators;
mod local;
mod memory;
mod s3;
mod sftp;
mod support;
mod webdav;
