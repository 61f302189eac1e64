# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["fileinto", "mailbox"]; fileinto :create "New/Folder";
