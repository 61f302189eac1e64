# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["imap4flags", "variables"]; setflag "f" "x y"; addflag "f" "z"; if hasflag "f" "z" { discard; }
