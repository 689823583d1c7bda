/* The pod sandbox process of the test node (the role of Kubernetes' pause image): it holds the
 * pod's namespaces, reaps orphans and exits on SIGINT or SIGTERM. Built statically here because
 * no registry serves the upstream image to the test machine. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  if (getpid() != 1) {
    /* Only meaningful as a pod's first process. */
    return 1;
  }
  signal(SIGINT, stop);
  signal(SIGTERM, stop);
  signal(SIGCHLD, reap);
  for (;;) pause();
}
