# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
redirect "a@x.org"; redirect "b@x.org"; redirect "c@x.org"; redirect "d@x.org"; redirect "e@x.org";
