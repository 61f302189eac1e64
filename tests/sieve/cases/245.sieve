# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require ["mime"]; if header :anychild "content-type" "x" { discard; }
