# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
redirect "a@example.com"; redirect "a@example.com";
