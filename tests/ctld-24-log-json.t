# --log-format json: every line the server, the node, the hub and the CLI
# write is one JSON object with time (RFC 3339 UTC, milliseconds), level,
# role and msg; a hostile request path (quotes, a backslash, newlines,
# control characters) stays inside its string; text stays the default; a
# bad value is refused.  No root needed.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../dstack-ctld/tests";
use CtldTest;
use File::Temp qw(tempdir);
use JSON::PP;
use Test::More;

my $APP = 'ab12';
my $TIME = qr/\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\z/;

# every line of $text as JSON objects; a line that is not one fails
sub json_lines {
    my ($text, $role, $name) = @_;
    my @objs;
    my $bad = 0;
    for my $line (split /\n/, $text) {
        my $o = eval { JSON::PP->new->decode($line) };
        if (ref $o ne 'HASH'
            || ($o->{time} // '') !~ $TIME
            || ($o->{level} // '') !~ /\A(?:error|warn|info|debug)\z/
            || ($o->{role} // '') ne $role
            || !defined $o->{msg} || ref $o->{msg})
        {
            diag("not a $role log object: $line");
            $bad++;
            next;
        }
        push @objs, $o;
    }
    ok(@objs && !$bad, "$name: " . scalar(@objs) . ' lines, each one JSON object'
       . ' with time, level, role and msg');
    return @objs;
}

# --- the server
my $srv = start_server(args => ['--server-app-id', $APP, '--log-format', 'json']);

# a node name the admin API refuses, with every character a log must not
# pass through raw; the path is what the server logs of it
my $hostile = 'a"b\\c%0Ad%0D%01%1B[31me%7F';
my $res = req($srv, 'DELETE', "/api/v1/nodes/$hostile", app => $APP, token => 'x' x 43);
ok($res->{status} >= 400, "a hostile node name is refused ($res->{status})");
$res = req($srv, 'GET', "/no/$hostile", app => $APP);
is($res->{status}, 404, 'a hostile unknown path: 404');
join_node($srv, $APP, 'i1', 'n1');
$srv->stop;

my $text = $srv->log_text;
my @objs = json_lines($text, 'server', 'server');
ok(!grep({ /[\x00-\x08\x0b-\x1f\x7f]/ } split /\n/, $text),
   'no raw control character in any line');
my ($hit) = grep { $_->{msg} =~ m{^404 GET /no/} } @objs;
ok($hit, 'the 404 is logged') or diag($text);
is($hit->{msg} // '', '404 GET /no/a"b\x5cc\x0ad\x0d\x01\x1b[31me\x7f app=-: Not found',
   'the hostile path: quotes kept inside the string, the rest escaped');
is_deeply($hit->{fields} // {}, { app => '-' }, 'its app=... word as a field');
ok((grep { $_->{msg} =~ /listening on/ && $_->{level} eq 'info' } @objs),
   'the start line is there, level info');
ok(index($text, 'x' x 43) < 0, 'the bearer token given is not logged');

# --- the environment sets it too; a flag wins over it
{
    local $ENV{VPC_LOG_FORMAT} = 'json';
    my $s2 = start_server(args => ['--server-app-id', $APP]);
    $s2->stop;
    json_lines($s2->log_text, 'server', 'VPC_LOG_FORMAT=json');
    my $s3 = start_server(args => ['--server-app-id', $APP, '--log-format', 'text']);
    $s3->stop;
    like($s3->log_text, qr/\A\d{4}-\d\d-\d\dT[\d:.]+Z info  /,
         '--log-format text wins over the environment');
}

# --- text stays the default
my $plain = start_server(args => ['--server-app-id', $APP]);
$plain->stop;
like($plain->log_text, qr/\A\d{4}-\d\d-\d\dT[\d:.]+Z info  allowed-apps not set/,
     'the default is plain text');

# --- bad values are refused, before anything starts
for my $bad (['--log-format', 'xml'], ['--log-format', 'JSON'], ['--log-format', '']) {
    my ($status, $out) = server_refused('--server-app-id', $APP, @$bad);
    is($status, 2, "server --log-format '$bad->[1]': exit 2");
    like($out, qr/log-format: "\Q$bad->[1]\E" is not text or json/, '  and says why');
}
{
    local $ENV{VPC_LOG_FORMAT} = 'yaml';
    my ($status, $out) = server_refused('--server-app-id', $APP);
    is($status, 2, 'VPC_LOG_FORMAT=yaml: exit 2');
    like($out, qr/log-format: "yaml" is not text or json/, '  and says why');
}

# --- the node and the hub: a few lines each, no server needed
my $dir = tempdir('ctld-XXXXXX', TMPDIR => 1, CLEANUP => 1);
sub role_lines {
    my (@args) = @_;
    my $cmd = join ' ', map { "'$_'" } 'timeout', '2', CtldTest::ctld_bin(), 'node',
        '--server-url', 'http://127.0.0.1:1', '--names', 'hosts', '--hosts-file', 'none',
        '--backend', 'uapi', '--log-format', 'json', @args;
    return scalar `$cmd 2>&1 </dev/null`;
}
my @node = json_lines(role_lines('--server-app-id', 'none', '--interface', 'ljson0',
                                 '--state-dir', "$dir/node"), 'node', 'node');
ok((grep { $_->{msg} =~ /node starting/ } @node), 'the node says it starts');
my @hub = json_lines(role_lines('--hub', '--interface', 'ljson1', '--data-dir', "$dir/hub"),
                     'hub', 'hub');
ok((grep { $_->{level} eq 'warn' && $_->{msg} =~ /wg\.key/ } @hub),
   'the hub warns that the server has not made its key yet');
my $out = `'@{[ CtldTest::ctld_bin() ]}' node --server-app-id none --log-format text/json 2>&1`;
is($? >> 8, 2, 'node --log-format text/json: exit 2');
like($out, qr{log-format: "text/json" is not text or json}, '  and says why');

# --- the CLI takes the option too and refuses a bad one
my $cli = `'@{[ CtldTest::ctld_bin() ]}' nodes list --data-dir $dir/none --log-format json 2>&1`;
is($? >> 8, 1, 'nodes list --log-format json: runs (no token here: exit 1)');
$cli = `'@{[ CtldTest::ctld_bin() ]}' nodes list --data-dir $dir/none --log-format bad 2>&1`;
is($? >> 8, 2, 'nodes list --log-format bad: exit 2');
like($cli, qr/log-format: "bad" is not text or json/, '  and says why');

done_testing();
