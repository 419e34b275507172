#!/usr/bin/perl
# Negative self-tests of t/lib/Test/Nginx (t/000-runner.t shows that right
# expectations pass): a block whose expectation is wrong must fail, run as
# a test file of its own through prove, the way make test runs t/*.t.

use strict;
use warnings;

use File::Temp qw(tempdir);
use Test::More;

$ENV{TEST_NGINX_LOAD_MODULES}
    or plan skip_all => 'TEST_NGINX_LOAD_MODULES is not set';

my $dir = tempdir(CLEANUP => 1);
my $n = 0;

# runs one block as a t file; (prove's exit status, its output)
sub run_block {
    my ($block, $head) = @_;
    my $file = "$dir/case" . ++$n . '.t';
    open my $fh, '>', $file or die;
    print $fh "use Test::Nginx::Socket 'no_plan';\n", $head // '',
              "\$ENV{TEST_NGINX_HTML_DIR} ||= html_dir();\n",
              "run_tests();\n__DATA__\n\n$block";
    close $fh;
    local $ENV{TEST_NGINX_SERVROOT} = "$dir/servroot$n";
    local $ENV{TEST_NGINX_PORT} = 1984 + 1000 + $$ % 1000;
    my $out = qx{prove -v -It/lib $file 2>&1};
    return ($? >> 8, $out);
}

my $ok_config = <<'BLOCK';
--- config
    location = /t {
        return 200 "hello\n";
    }
--- request
GET /t
BLOCK

my ($rc, $out) = run_block("=== TEST 1: right\n$ok_config--- response_body\nhello\n");
is($rc, 0, 'a right block passes') or diag($out);

($rc, $out) = run_block("=== TEST 1: wrong body\n$ok_config--- response_body\nbye\n");
isnt($rc, 0, 'a wrong response_body fails');

($rc, $out) = run_block("=== TEST 1: wrong status\n$ok_config--- error_code: 404\n");
isnt($rc, 0, 'a wrong error_code fails');

# nginx logs the SIGQUIT that stops it, after the last response
($rc, $out) = run_block("=== TEST 1: late line\n$ok_config--- no_error_log\nSIGQUIT\n");
isnt($rc, 0, 'no_error_log sees lines logged after the last response');
like($out, qr/matches line ".*SIGQUIT.*" \(after the last response\)/,
     '  and names the line');

my $crit = <<'BLOCK';
--- config
    location = /t {
        proxy_pass http://unix:/nonexistent/backend.sock;
    }
--- request
GET /t
--- error_code: 502
BLOCK

($rc, $out) = run_block("=== TEST 1: unexpected crit\n$crit");
isnt($rc, 0, 'an unexpected [crit] line fails the block');
like($out, qr/no unexpected \[alert\], \[crit\] or \[emerg\] line.*connect\(\) to unix/,
     '  and names it');

($rc, $out) = run_block("=== TEST 1: expected crit\n$crit--- error_log eval\nqr/\\[crit\\] .*connect\\(\\) to unix/\n");
is($rc, 0, 'a [crit] line the block expects (at that level) passes') or diag($out);

($rc, $out) = run_block("=== TEST 1: wrong level\n$crit--- error_log eval\nqr/\\[error\\] .*connect\\(\\) to unix/\n");
isnt($rc, 0, 'the same line expected at another level fails');

($rc, $out) = run_block("=== TEST 1: misspelled\n$ok_config--- respons_body\nbye\n");
isnt($rc, 0, 'a misspelled section fails');
like($out, qr/unknown sections .*: respons_body/, '  and names it');

($rc, $out) = run_block("=== TEST 1: declared\n$ok_config--- mine: x\n--- response_body\nhello\n",
                        "our \@BlockSections = qw(mine);\n");
is($rc, 0, 'a section the file declares is accepted') or diag($out);

done_testing();
