# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "imap4flags"; setflag "a"; if hasflag :contains "x" { discard; }
