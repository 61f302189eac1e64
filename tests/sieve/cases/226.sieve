# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
redirect "bad address";
