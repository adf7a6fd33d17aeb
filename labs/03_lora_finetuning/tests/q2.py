OK_FORMAT = True

test = {   'name': 'q2',
    'points': 2,
    'suites': [   {   'cases': [{'code': '>>> from helpers.course.checks import lab03, say\n>>> say(lab03.q2(json_gain, category_after_low, zero_shot, after))\n', 'hidden': False, 'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
