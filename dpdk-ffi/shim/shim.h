/* dpdkffi shim: out-of-line wrappers for DPDK's static inline functions and
 * thread-local variables, which bindgen cannot bind. Call these per burst,
 * not per packet. */
#ifndef DPDKFFI_SHIM_H
#define DPDKFFI_SHIM_H

#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;
struct rte_ring;

uint16_t dpdkffi_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t dpdkffi_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);

struct rte_mbuf *dpdkffi_pktmbuf_alloc(struct rte_mempool *mp);
int dpdkffi_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **pkts, unsigned int n);
void dpdkffi_pktmbuf_free(struct rte_mbuf *m);
void dpdkffi_pktmbuf_free_bulk(struct rte_mbuf **pkts, unsigned int n);
void dpdkffi_pktmbuf_reset(struct rte_mbuf *m);
char *dpdkffi_pktmbuf_append(struct rte_mbuf *m, uint16_t len);

void *dpdkffi_pktmbuf_mtod(const struct rte_mbuf *m);
uint32_t dpdkffi_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t dpdkffi_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t dpdkffi_mbuf_rss_hash(const struct rte_mbuf *m);
uint64_t dpdkffi_mbuf_ol_flags(const struct rte_mbuf *m);
void dpdkffi_mbuf_set_ol_flags(struct rte_mbuf *m, uint64_t flags);

unsigned int dpdkffi_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned int n);
unsigned int dpdkffi_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned int n);
unsigned int dpdkffi_ring_count(const struct rte_ring *r);

unsigned int dpdkffi_lcore_id(void);
uint64_t dpdkffi_rdtsc(void);
int dpdkffi_errno(void);

#endif
