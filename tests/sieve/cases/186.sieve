# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "editheader"; addheader "X-Sieve" "yes"; if header :is "x-sieve" "yes" { discard; }
