# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["imap4flags", "fileinto"]; addflag "a"; addflag "b"; removeflag "a"; fileinto "X";
