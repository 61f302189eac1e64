# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "vacation"; if header :contains "subject" "meeting" { vacation "Away."; discard; }
