# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["imap4flags", "fileinto"]; addflag "seen-it"; fileinto "A"; removeflag "seen-it"; fileinto "B";
