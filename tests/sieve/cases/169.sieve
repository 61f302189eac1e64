# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["index", "date"]; if date :index 1 :originalzone "date" "year" "2021" { discard; }
