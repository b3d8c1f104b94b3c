/**
 * Run before the test suite (`deno task test`): the suite mounts filesystems,
 * so as any user but root it would only fail case after case. Prints one line
 * and exits 1 instead.
 *
 * @module
 */

if (Deno.uid() !== 0) {
  console.error(
    "strata's tests must run as root (they mount filesystems): sudo deno task test",
  );
  Deno.exit(1);
}
