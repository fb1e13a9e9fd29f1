package demo

// What the Writer's reviewers say, by stars (index 0 is one star).
var reviewBodies = [5][]string{
	{"Never arrived.", "Broke the first week.", "Nothing like the photos.", "Asked for a refund, still waiting.", "Would give zero stars if I could."},
	{"Slow to ship and flimsy.", "Disappointing for the price.", "Seller was hard to reach.", "Colour was way off.", "Smaller than described."},
	{"It is fine.", "Does the job.", "Average, nothing special.", "Okay for the price.", "Took a while, but it works."},
	{"Good value.", "Nice, would buy again.", "Well made, shipped quickly.", "Very happy, minor scuff on arrival.", "Solid. Gift wrapped nicely too."},
	{"Absolutely love it!", "Perfect, and beautifully packed.", "Best purchase this year.", "Exceeded my expectations.", "Ordering a second one for my sister."},
}

// Edits change a review's stars; the text says why.
var editBodies = []string{
	"Edit: the seller made it right, updating my review.",
	"Edit: after a month of use I see it differently.",
	"Edit: it broke, lowering my rating.",
	"Edit: replacement arrived, much better.",
	"Edit: changed my mind.",
}

// The story: shipments run late, then buyers dispute.
var storyBodies = [3][]string{
	{"Ordered three weeks ago, still not shipped.", "Tracking has not moved in ten days.", "Paid for express, it took a month.", "Where is my order?"},
	{"Seller stopped answering messages.", "Arrived late and chipped. No reply from the seller.", "Second order in a row that is late.", "Shop says 'in transit' for weeks now."},
	{"Opened a dispute with the marketplace.", "Refund refused. Filed a chargeback.", "Dispute opened: item never delivered.", "Avoid. Dispute still open after a month."},
}

// A product goes viral: a flood of new buyers, most of them delighted.
var viralBodies = []string{
	"Saw it on TikTok, had to have it!",
	"Believe the hype.",
	"Sold out twice, worth the wait.",
	"My whole feed is this product and now I know why.",
	"Bought one for everyone in the office.",
}

// What users say when they rate each other.
var ratingComments = []string{
	"Smooth trade.", "Paid promptly.", "Friendly and fast.", "Slow to reply.", "Item as described.", "Would trade again.",
}
