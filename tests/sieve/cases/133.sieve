# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["imap4flags", "fileinto"]; fileinto :flags "\\Seen work" "Work";
