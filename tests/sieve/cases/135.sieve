# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "imap4flags"; addflag ["a", "b c"]; if hasflag "b" { discard; }
