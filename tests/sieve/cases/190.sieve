# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "editheader"; addheader :last "X-End" "1"; if exists "x-end" { discard; }
