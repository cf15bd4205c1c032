/// Who waits for the upstream budget (or for a streamed transfer's connection), in which order:
/// interactive requests before background refreshes, and within each, clients in turn (round
/// robin), so that no client can take the whole budget, or every connection, when contended.
/// Pure bookkeeping; `UpstreamBudget` and `StreamingClient` drive it.
public struct FairQueue<Item> {
    public enum Priority: Int, Sendable, CaseIterable { case interactive = 0, background = 1 }

    private var queues: [[String: [Item]]] = [[:], [:]]
    private var turns: [[String]] = [[], []]
    public private(set) var count = 0

    public init() {}

    public mutating func push(_ item: Item, client: String, priority: Priority) {
        let p = priority.rawValue
        if queues[p][client] == nil { turns[p].append(client) }
        queues[p][client, default: []].append(item)
        count += 1
    }

    /// The next item: first priority class with anything, next client in turn.
    public mutating func pop() -> Item? {
        for p in 0..<queues.count {
            guard !turns[p].isEmpty else { continue }
            let client = turns[p].removeFirst()
            var items = queues[p][client]!
            let item = items.removeFirst()
            if items.isEmpty { queues[p][client] = nil } else {
                queues[p][client] = items
                turns[p].append(client)
            }
            count -= 1
            return item
        }
        return nil
    }

    /// The item `pop` would return, left in place.
    public func peek() -> Item? {
        for p in 0..<queues.count {
            guard let client = turns[p].first else { continue }
            return queues[p][client]?.first
        }
        return nil
    }

    /// The smallest value of `key` over the items queued (nil when empty).
    public func earliest(by key: (Item) -> Double) -> Double? {
        queues.flatMap { $0.values.flatMap { $0 } }.map(key).min()
    }

    /// Removes and returns the first item (in `pop`'s order within each priority and client)
    /// for which `predicate` holds; `predicate` is called once per item looked at.
    public mutating func removeFirst(where predicate: (Item) -> Bool) -> Item? {
        for p in 0..<queues.count {
            for client in turns[p] {
                guard var items = queues[p][client], let index = items.firstIndex(where: predicate) else { continue }
                let item = items.remove(at: index)
                queues[p][client] = items.isEmpty ? nil : items
                if items.isEmpty { turns[p].removeAll { $0 == client } }
                count -= 1
                return item
            }
        }
        return nil
    }

    /// Whether any queued item satisfies `predicate`.
    public func contains(where predicate: (Item) -> Bool) -> Bool {
        queues.contains { $0.values.contains { $0.contains(where: predicate) } }
    }

    /// Removes and returns every item for which `predicate` holds (expired waiters).
    public mutating func removeAll(where predicate: (Item) -> Bool) -> [Item] {
        var removed: [Item] = []
        for p in 0..<queues.count {
            for client in turns[p] {
                let items = queues[p][client]!
                let kept = items.filter { !predicate($0) }
                removed += items.filter(predicate)
                queues[p][client] = kept.isEmpty ? nil : kept
            }
            turns[p].removeAll { queues[p][$0] == nil }
        }
        count -= removed.count
        return removed
    }
}
